//! Content digests (`sha256:<hex>`), parsed once where they enter: an
//! image's JSON and blob names, a registry reference or header, a CLI
//! argument, a snapshotter label, a table of contents. Past that point a
//! [`Digest`] is known to be well formed, so nothing downstream checks it
//! again or by a rule of its own.
//!
//! The rule is the OCI image spec's ("Digests" in descriptor.md):
//! `algorithm ":" encoded`, the algorithm `[a-z0-9]+([.+_-][a-z0-9]+)*`.
//! Only the two registered algorithms are taken, with their encodings:
//! sha256 (64 lowercase hex digits) and sha512 (128). A digest of any
//! other algorithm is refused with the algorithm named rather than carried
//! along: layerfs could neither verify the bytes it names nor be sure the
//! encoding is safe to put in a path or a URL. Uppercase hex is refused
//! too, as the spec says, so that one blob has one name (cache keys, blob
//! paths and comparisons all go by the text).

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// How much of a bad digest an error quotes: enough to recognise it,
/// never a whole oversized input.
const QUOTED: usize = 150;

/// A registered digest algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256: 64 lowercase hex digits; the one layerfs verifies.
    Sha256,
    /// SHA-512: 128 lowercase hex digits; recognised, not verified.
    Sha512,
}

impl Algorithm {
    /// The name a digest starts with.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// How many hex digits its encoding has.
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A well-formed digest of a registered algorithm, kept in its canonical
/// text (which is also how it is shown, compared and stored).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    text: String,
    algorithm: Algorithm,
}

/// Why a text is not a [`Digest`]; the message quotes the text, the
/// caller says where it came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{quoted} {why}")]
pub struct DigestError {
    quoted: String,
    why: String,
}

impl DigestError {
    fn new(text: &str, why: impl Into<String>) -> DigestError {
        let quoted = match text.char_indices().nth(QUOTED) {
            Some((cut, _)) => format!("{:?}…", &text[..cut]),
            None => format!("{text:?}"),
        };
        DigestError {
            quoted,
            why: why.into(),
        }
    }
}

impl Digest {
    /// Parses `text` by the OCI rule (see the module docs).
    pub fn parse(text: &str) -> Result<Digest, DigestError> {
        let shape =
            "is not a valid digest (ALGORITHM:HEX, e.g. sha256: and 64 lowercase hex digits)";
        let Some((algorithm, encoded)) = text.split_once(':') else {
            return Err(DigestError::new(text, shape));
        };
        if !algorithm_ok(algorithm) || !encoded_ok(encoded) {
            return Err(DigestError::new(text, shape));
        }
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => {
                return Err(DigestError::new(
                    text,
                    format!(
                        "has algorithm {other:?}, which layerfs cannot verify (only sha256 and sha512 digests are read)"
                    ),
                ))
            }
        };
        let hex_ok = encoded.len() == algorithm.hex_len()
            && encoded
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex_ok {
            return Err(DigestError::new(
                text,
                format!(
                    "is not a valid digest ({algorithm}: and {} lowercase hex digits)",
                    algorithm.hex_len()
                ),
            ));
        }
        Ok(Digest {
            text: text.to_string(),
            algorithm,
        })
    }

    /// The digest of a sha256 hash's 32 bytes.
    pub fn from_sha256(hash: [u8; 32]) -> Digest {
        use fmt::Write as _;
        let mut text = String::with_capacity(7 + 64);
        text.push_str("sha256:");
        for b in hash {
            let _ = write!(text, "{b:02x}");
        }
        Digest {
            text,
            algorithm: Algorithm::Sha256,
        }
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256(bytes: &[u8]) -> Digest {
        Digest::from_sha256(sha2::Sha256::digest(bytes).into())
    }

    /// The 32 bytes of a sha256 digest; `None` for another algorithm.
    pub fn sha256_bytes(&self) -> Option<[u8; 32]> {
        if self.algorithm != Algorithm::Sha256 {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(self.hex().as_bytes().chunks(2)) {
            *byte = pair.iter().fold(0, |acc, &d| acc << 4 | hex_value(d));
        }
        Some(out)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex digits after `ALGORITHM:`.
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.name().len() + 1..]
    }

    /// The canonical text, `ALGORITHM:HEX`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// `[a-z0-9]+([.+_-][a-z0-9]+)*`.
fn algorithm_ok(algorithm: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    algorithm
        .split(['.', '+', '_', '-'])
        .all(|component| !component.is_empty() && component.bytes().all(alnum))
}

/// The value of a lowercase hex digit (which a parsed digest holds only).
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit.wrapping_sub(b'0'),
    }
}

/// `[a-zA-Z0-9=_-]+`.
fn encoded_ok(encoded: &str) -> bool {
    !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(text: &str) -> Result<Digest, DigestError> {
        Digest::parse(text)
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;

    fn try_from(text: String) -> Result<Digest, DigestError> {
        Digest::parse(&text)
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.text
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn refused(text: &str, why: &str) {
        match Digest::parse(text) {
            Err(e) => {
                let message = e.to_string();
                assert!(message.contains(why), "{text}: {message}");
            }
            Ok(d) => panic!("{text}: taken as {d}"),
        }
    }

    #[test]
    fn a_good_sha256_digest_keeps_its_text() {
        let text = format!("sha256:{HEX}");
        let digest = Digest::parse(&text).expect("good");
        assert_eq!(digest.algorithm(), Algorithm::Sha256);
        assert_eq!(digest.hex(), HEX);
        assert_eq!(digest.to_string(), text);
        assert_eq!(digest.as_str(), text);
        assert_eq!(text.parse::<Digest>(), Ok(digest));
    }

    #[test]
    fn sha512_is_registered() {
        let hex = HEX.repeat(2);
        let digest = Digest::parse(&format!("sha512:{hex}")).expect("sha512");
        assert_eq!(digest.algorithm(), Algorithm::Sha512);
        assert_eq!(digest.hex(), hex);
        refused(&format!("sha512:{HEX}"), "128 lowercase hex digits");
    }

    #[test]
    fn uppercase_short_and_long_hex_are_refused() {
        refused(
            &format!("sha256:{}", HEX.to_uppercase()),
            "64 lowercase hex",
        );
        refused(&format!("sha256:{}", &HEX[1..]), "64 lowercase hex");
        refused(&format!("sha256:{HEX}0"), "64 lowercase hex");
        refused("sha256:00", "64 lowercase hex");
        refused(&format!("sha256:{}g", &HEX[1..]), "64 lowercase hex");
    }

    #[test]
    fn bad_shapes_are_refused_by_the_grammar() {
        for bad in [
            String::new(),
            "sha256".to_string(),
            HEX.to_string(),
            format!(":{HEX}"),
            "sha256:".to_string(),
            format!("SHA256:{HEX}"),
            format!("sha256+:{HEX}"),
            format!(".sha256:{HEX}"),
            format!("sha256:../{HEX}"),
            format!("../x:{HEX}"),
            format!("sha256:{HEX}:{HEX}"),
        ] {
            refused(&bad, "is not a valid digest");
        }
    }

    #[test]
    fn unregistered_algorithms_are_named() {
        refused(&format!("md5:{}", &HEX[..32]), "algorithm \"md5\"");
        refused(&format!("multihash+base58:{HEX}"), "cannot verify");
        refused(&format!("sha256+b64u:{HEX}"), "\"sha256+b64u\"");
    }

    #[test]
    fn errors_quote_a_bounded_part_of_the_text() {
        let long = "x".repeat(100_000);
        let message = Digest::parse(&long).expect_err("long").to_string();
        assert!(message.len() < 400, "{}", message.len());
        assert!(message.starts_with("\"xxx"), "{message}");
    }

    #[test]
    fn sha256_hashes_to_a_digest() {
        assert_eq!(
            Digest::sha256(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            Digest::from_sha256([0xab; 32]).hex(),
            "ab".repeat(32).as_str()
        );
        let hash: [u8; 32] = std::array::from_fn(|i| (i * 8) as u8);
        let digest = Digest::from_sha256(hash);
        assert_eq!(digest.sha256_bytes(), Some(hash));
        let sha512 = Digest::parse(&format!("sha512:{}", "0".repeat(128))).expect("sha512");
        assert_eq!(sha512.sha256_bytes(), None);
    }

    #[test]
    fn serde_parses_on_the_way_in_and_writes_the_text() {
        let text = format!("\"sha256:{HEX}\"");
        let digest: Digest = serde_json::from_str(&text).expect("json");
        assert_eq!(serde_json::to_string(&digest).expect("out"), text);
        let bad = serde_json::from_str::<Digest>("\"sha256:00\"").expect_err("bad");
        assert!(bad.to_string().contains("\"sha256:00\""), "{bad}");
    }
}
