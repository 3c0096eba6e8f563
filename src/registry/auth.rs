//! Registry authentication: anonymous until a 401 says otherwise, then
//! what its `WWW-Authenticate` challenge asks for, a bearer token from the
//! token service (the Docker token flow every public registry uses) or
//! HTTP basic.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;

use super::creds::Credentials;
use super::retry::{Failure, RetryPolicy};
use super::transport::{self, Http};
use super::RegistryError;

/// The most a token answer may be (real ones are a few kilobytes).
const MAX_TOKEN_ANSWER: u64 = 1 << 20;

/// What a registry's 401 asked for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// Get a token from `realm`, for `service` and `scope`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// Send the login itself.
    Basic,
}

/// Parses a `WWW-Authenticate` value: a scheme, then `key=value` pairs
/// whose values may be quoted (and a quoted scope may hold commas).
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.insert(key, value.trim().to_string());
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm").filter(|r| !r.is_empty())?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

/// The token service's answer (`token` per Docker, `access_token` per
/// OAuth 2; registries send one or both).
#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// One repository's authentication state, shared by every request to it
/// (from any thread).
#[derive(Debug)]
pub(crate) struct Auth {
    /// `REGISTRY/REPO`, for messages.
    place: String,
    /// The repository, for the scope to ask a token for when the
    /// challenge names none.
    repository: String,
    creds: Option<Credentials>,
    /// Where a login would have come from, for messages about having none.
    config_path: Option<String>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The `Authorization` value requests carry now.
    header: Option<String>,
    /// Tokens by the scope they were issued for.
    tokens: HashMap<String, String>,
}

impl Auth {
    pub fn new(
        place: String,
        repository: &str,
        creds: Option<Credentials>,
        config_path: Option<String>,
    ) -> Auth {
        Auth {
            place,
            repository: repository.to_string(),
            creds,
            config_path,
            state: Mutex::new(State::default()),
        }
    }

    /// The `Authorization` value to send, if any yet.
    pub fn header(&self) -> Option<String> {
        self.lock().header.clone()
    }

    /// Whether credentials were sent, and from where, for a 401 or 403.
    pub fn describe(&self) -> String {
        match (&self.creds, &self.config_path) {
            (Some(creds), _) => format!(
                "the login of {:?} from {} was used",
                creds.user, creds.origin
            ),
            (None, Some(path)) => format!(
                "no login was used (none given with --creds, none for this registry in {path})"
            ),
            (None, None) => "no login was used (none given with --creds)".into(),
        }
    }

    /// The scope to ask a token for when the challenge names none: pull,
    /// or pull and push for a request that writes (a token for pull alone
    /// would be refused again at once).
    fn default_scope(&self, push: bool) -> String {
        let actions = if push { "pull,push" } else { "pull" };
        format!("repository:{}:{actions}", self.repository)
    }

    /// Answers a 401 that came back for a request that carried `sent`
    /// (`push`: one that writes): sets what the next attempt sends, or
    /// fails when nothing new can be tried. A token that another thread
    /// refreshed meanwhile is reused.
    pub fn answer(
        &self,
        http: &Http,
        retry: &RetryPolicy,
        challenge: Option<&str>,
        sent: Option<&str>,
        what: &str,
        push: bool,
    ) -> Result<(), Failure> {
        let unauthorized = || RegistryError::Unauthorized {
            place: self.place.clone(),
            what: what.to_string(),
            creds: self.describe(),
        };
        let Some(challenge) = challenge.and_then(parse_challenge) else {
            return Err(unauthorized().into());
        };
        let mut state = self.lock();
        let header = match challenge {
            Challenge::Basic => match &self.creds {
                Some(creds) => creds.basic(),
                None => return Err(unauthorized().into()),
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let scope = scope.unwrap_or_else(|| self.default_scope(push));
                let cached = state.tokens.get(&scope).map(|t| format!("Bearer {t}"));
                match cached {
                    Some(cached) if Some(cached.as_str()) != sent => cached,
                    _ => {
                        let token = retry
                            .run(|| self.fetch_token(http, &realm, service.as_deref(), &scope))?;
                        state.tokens.insert(scope, token.clone());
                        format!("Bearer {token}")
                    }
                }
            }
        };
        if sent == Some(header.as_str()) {
            return Err(unauthorized().into());
        }
        state.header = Some(header);
        Ok(())
    }

    /// One request to the token service.
    fn fetch_token(
        &self,
        http: &Http,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, Failure> {
        let what = format!("a token from {realm}");
        let mut query = vec![("scope", scope)];
        query.extend(service.map(|s| ("service", s)));
        let basic = self.creds.as_ref().map(Credentials::basic);
        let mut response = http.get(realm, &query, basic.as_deref(), &[], &self.place, &what)?;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Err(RegistryError::Unauthorized {
                place: self.place.clone(),
                what,
                creds: self.describe(),
            }
            .into());
        }
        transport::check_status(&response, &self.place, &what)?;
        let token_error = |reason: String| RegistryError::Token {
            place: self.place.clone(),
            realm: realm.to_string(),
            reason,
        };
        let body = transport::read_small(&mut response, MAX_TOKEN_ANSWER, &self.place, &what)?;
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| token_error(format!("the answer is not valid JSON: {e}")))?;
        answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| token_error("the answer holds no token".into()).into())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the state as
        // valid as before (each field is replaced whole).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse_with_quoted_commas() {
        let challenge = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull,push""#,
        );
        assert_eq!(
            challenge,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/ubuntu:pull,push".into()),
            })
        );
        let challenge = parse_challenge("bearer realm=http://h/t, scope=\"a\\\"b\"");
        assert_eq!(
            challenge,
            Some(Challenge::Bearer {
                realm: "http://h/t".into(),
                service: None,
                scope: Some("a\"b".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }
}
