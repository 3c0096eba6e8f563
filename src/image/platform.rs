//! The platform a multi-platform index is resolved for.

use std::fmt;

use super::ImageError;

/// An OCI platform: `os/architecture[/variant]`, in OCI's names
/// (`linux/amd64`, `linux/arm64/v8`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v7`, `v8`, …; `None` matches any variant.
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(text: &str) -> Result<Platform, ImageError> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts
                    .get(2)
                    .filter(|v| !v.is_empty())
                    .map(|v| v.to_string()),
            }),
            _ => Err(ImageError::BadPlatform(text.to_string())),
        }
    }

    /// The platform this program runs on, in OCI's names (Rust says
    /// `x86_64` and `aarch64` where OCI says `amd64` and `arm64`).
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: None,
        }
    }

    /// Whether a descriptor's platform is this one (any variant if this
    /// one names none).
    pub(crate) fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        self.os == os
            && self.architecture == architecture
            && self.variant.as_deref().is_none_or(|v| Some(v) == variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches_platforms() {
        let arm = Platform::parse("linux/arm64/v8").expect("parse");
        assert_eq!(arm.to_string(), "linux/arm64/v8");
        assert!(arm.matches("linux", "arm64", Some("v8")));
        assert!(!arm.matches("linux", "arm64", None));
        let any = Platform::parse("linux/arm64").expect("parse");
        assert!(any.matches("linux", "arm64", Some("v8")));
        assert!(!any.matches("linux", "amd64", None));
        for bad in ["linux", "/amd64", "linux/", "a/b/c/d", ""] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        let host = Platform::host();
        assert!(!host.architecture.contains("x86_64") && !host.architecture.contains("aarch64"));
    }
}
