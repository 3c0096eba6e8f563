//! Where a registry login comes from: `--creds USER:PASS`, else what
//! `docker login` stored in the Docker config file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use super::{Reference, RegistryError, RegistryOptions};

/// The names `docker login` files Docker Hub's login under, besides the
/// API host itself.
const DOCKER_HUB_KEYS: [&str; 3] = ["index.docker.io", "docker.io", "registry-1.docker.io"];

/// A user name and password, and where they came from (for messages that
/// must say which login a registry refused).
#[derive(Clone)]
pub(crate) struct Credentials {
    pub user: String,
    pub password: String,
    /// `--creds`, or `PATH (auths["KEY"])`.
    pub origin: String,
}

/// Never print the password, not even in a debug log.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} from {})", self.user, self.origin)
    }
}

impl Credentials {
    /// The `Authorization` value for HTTP basic authentication.
    pub fn basic(&self) -> String {
        let pair = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// The login to use for `reference`'s registry, if any; `Ok(None)` means
/// anonymous. A config file that does not exist is no login; one that
/// cannot be read or parsed is an error, as with docker.
pub(crate) fn find(
    reference: &Reference,
    options: &RegistryOptions,
) -> Result<Option<Credentials>, RegistryError> {
    if let Some(creds) = &options.creds {
        let (user, password) = creds.split_once(':').ok_or(RegistryError::BadCreds)?;
        return Ok(Some(Credentials {
            user: user.to_string(),
            password: password.to_string(),
            origin: "--creds".into(),
        }));
    }
    let Some(path) = config_path(options) else {
        return Ok(None);
    };
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(RegistryError::DockerConfig {
                path,
                reason: e.to_string(),
            })
        }
    };
    let config: DockerConfig =
        serde_json::from_slice(&text).map_err(|e| RegistryError::DockerConfig {
            path: path.clone(),
            reason: format!("not valid JSON: {e}"),
        })?;
    config.lookup(&path, reference)
}

/// Where the Docker config file is: the override, `$DOCKER_CONFIG`, or
/// `~/.docker`.
pub(crate) fn config_path(options: &RegistryOptions) -> Option<PathBuf> {
    if let Some(path) = &options.docker_config {
        return Some(path.clone());
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&dir).join("config.json"));
    }
    let home = std::env::var_os("HOME")?;
    Some(Path::new(&home).join(".docker/config.json"))
}

/// The parts of `config.json` that hold logins.
#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: HashMap<String, String>,
    #[serde(rename = "credsStore", default)]
    creds_store: Option<String>,
}

/// One registry's login in `auths`.
#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    /// base64 of `user:password`.
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(rename = "identitytoken", default)]
    identity_token: Option<String>,
}

impl DockerConfig {
    /// The login for `reference`'s registry. A login kept by a credential
    /// helper is out of reach (layerfs runs no helper programs): that is
    /// said once, and the registry is tried anonymously.
    fn lookup(
        &self,
        path: &Path,
        reference: &Reference,
    ) -> Result<Option<Credentials>, RegistryError> {
        let wanted = |host: &str| {
            host == reference.registry
                || (reference.is_docker_hub() && DOCKER_HUB_KEYS.contains(&host))
        };
        let mut keys: Vec<&String> = self.auths.keys().filter(|k| wanted(hostname(k))).collect();
        // The exact key first, so that a stray duplicate cannot shadow it.
        keys.sort_by_key(|k| (k.as_str() != reference.registry, k.as_str()));
        for key in keys {
            let entry = &self.auths[key];
            let origin = format!("{} (auths[{key:?}])", path.display());
            if let Some(creds) = entry.credentials(path, key, origin)? {
                return Ok(Some(creds));
            }
        }
        let helper = self
            .cred_helpers
            .iter()
            .find(|(host, _)| wanted(hostname(host)))
            .map(|(_, helper)| helper)
            .or(self.creds_store.as_ref());
        if let Some(helper) = helper {
            log::warn!(
                "{}: the login for {} is kept by docker-credential-{helper}, which layerfs \
                 does not run; trying anonymously (give --creds USER:PASS to log in)",
                path.display(),
                reference.registry
            );
        }
        Ok(None)
    }
}

impl AuthEntry {
    /// The login this entry holds; `None` for an empty entry (what
    /// `docker login` leaves when a helper keeps the secret).
    fn credentials(
        &self,
        path: &Path,
        key: &str,
        origin: String,
    ) -> Result<Option<Credentials>, RegistryError> {
        let bad = |reason: String| RegistryError::DockerConfig {
            path: path.to_path_buf(),
            reason: format!("auths[{key:?}]: {reason}"),
        };
        if let Some(encoded) = self.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| bad(format!("auth is not base64: {e}")))?;
            let text = String::from_utf8(decoded)
                .map_err(|_| bad("auth is not UTF-8 once decoded".into()))?;
            let (user, password) = text
                .split_once(':')
                .ok_or_else(|| bad("auth is not base64 of USER:PASSWORD".into()))?;
            return Ok(Some(Credentials {
                user: user.to_string(),
                password: password.to_string(),
                origin,
            }));
        }
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            return Ok(Some(Credentials {
                user: user.clone(),
                password: password.clone(),
                origin,
            }));
        }
        if self.identity_token.is_some() {
            log::warn!(
                "{}: auths[{key:?}] holds an identity token, which layerfs does not use; \
                 trying anonymously (give --creds USER:PASS to log in)",
                path.display()
            );
        }
        Ok(None)
    }
}

/// The host of an `auths` key, which may be a URL (`https://HOST/v1/`).
fn hostname(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::parse;

    fn reference(arg: &str) -> Reference {
        parse(arg).expect("valid").expect("a reference")
    }

    fn options_with(dir: &tempfile::TempDir, config: &str) -> RegistryOptions {
        let path = dir.path().join("config.json");
        std::fs::write(&path, config).expect("write config");
        RegistryOptions {
            docker_config: Some(path),
            ..RegistryOptions::default()
        }
    }

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn creds_flag_wins_and_needs_a_colon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = options_with(&dir, "not json");
        options.creds = Some("me:pa:ss".into());
        let found = find(&reference("example.com/a"), &options)
            .expect("found")
            .expect("some");
        assert_eq!(
            (found.user.as_str(), found.password.as_str()),
            ("me", "pa:ss")
        );
        assert_eq!(found.origin, "--creds");
        options.creds = Some("nocolon".into());
        assert!(matches!(
            find(&reference("example.com/a"), &options),
            Err(RegistryError::BadCreds)
        ));
    }

    #[test]
    fn config_keys_match_by_host_and_docker_hub_by_its_legacy_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            r#"{{"auths": {{
                "https://example.com:5000/v2/": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "other.io": {{"username": "u3", "password": "p3"}}
            }}}}"#,
            b64("u1:p1"),
            b64("hub:secret")
        );
        let options = options_with(&dir, &config);
        let get = |arg: &str| find(&reference(arg), &options).expect("readable");
        let found = get("example.com:5000/a").expect("login");
        assert_eq!((found.user.as_str(), found.password.as_str()), ("u1", "p1"));
        assert!(found.origin.contains("config.json"), "{}", found.origin);
        let found = get("docker://ubuntu").expect("hub login");
        assert_eq!(found.user, "hub");
        let found = get("other.io/x").expect("login");
        assert_eq!((found.user.as_str(), found.password.as_str()), ("u3", "p3"));
        assert!(
            get("example.com/a").is_none(),
            "another port is another registry"
        );
        assert!(found.basic().starts_with("Basic "));
        assert_eq!(found.basic(), format!("Basic {}", b64("u3:p3")));
    }

    #[test]
    fn helpers_and_missing_files_mean_anonymous_and_bad_files_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = options_with(
            &dir,
            r#"{"auths": {"example.com": {}}, "credsStore": "desktop"}"#,
        );
        assert!(find(&reference("example.com/a"), &options)
            .expect("readable")
            .is_none());
        let missing = RegistryOptions {
            docker_config: Some(dir.path().join("absent.json")),
            ..RegistryOptions::default()
        };
        assert!(find(&reference("example.com/a"), &missing)
            .expect("no file")
            .is_none());
        let options = options_with(&dir, r#"{"auths": {"example.com": {"auth": "!!"}}}"#);
        let message = find(&reference("example.com/a"), &options)
            .expect_err("bad base64")
            .to_string();
        assert!(
            message.contains("config.json") && message.contains("base64"),
            "{message}"
        );
        let options = options_with(&dir, "{");
        let message = find(&reference("example.com/a"), &options)
            .expect_err("bad json")
            .to_string();
        assert!(message.contains("not valid JSON"), "{message}");
    }
}
