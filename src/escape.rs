//! Names from layers as text for a terminal or a line-based reader.
//!
//! A layer may name a file with any bytes but `/` and NUL. Printed raw, a
//! newline in a name forges a line of a listing, a tab a column, and an
//! escape sequence drives the terminal showing it. [`Escaped`] shows such
//! bytes as C escapes, the way `ls -b` and `tar tv` do: `\n`, `\t`, `\r`,
//! and `\ooo` (octal) for each byte of any other control character, of a
//! bidirectional override (which reorders what follows on screen) and of
//! an undecodable sequence. A backslash is doubled, so two names never
//! show alike. Other text, non-ASCII letters included, is shown as is.
//! Output that must give the exact bytes (`ls --json`) does not use this.

use std::fmt;

/// Name bytes shown escaped; see the module docs.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            let text = chunk.valid();
            let mut shown = 0;
            for (at, c) in text.char_indices() {
                let escape = match c {
                    '\\' => "\\\\",
                    '\n' => "\\n",
                    '\t' => "\\t",
                    '\r' => "\\r",
                    c if c.is_control() || is_reordering(c) => "",
                    _ => continue,
                };
                f.write_str(text.get(shown..at).unwrap_or_default())?;
                shown = at + c.len_utf8();
                if escape.is_empty() {
                    let mut bytes = [0; 4];
                    octal(c.encode_utf8(&mut bytes).as_bytes(), f)?;
                } else {
                    f.write_str(escape)?;
                }
            }
            f.write_str(text.get(shown..).unwrap_or_default())?;
            octal(chunk.invalid(), f)?;
        }
        Ok(())
    }
}

/// Whether `c` changes the order in which a terminal shows the text around
/// it: the bidirectional marks, embeddings, overrides and isolates.
fn is_reordering(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn octal(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for &b in bytes {
        write!(f, "\\{b:03o}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(bytes: &[u8]) -> String {
        Escaped(bytes).to_string()
    }

    #[test]
    fn plain_names_and_letters_are_shown_as_they_are() {
        assert_eq!(shown(b"etc/passwd"), "etc/passwd");
        assert_eq!(shown("café/naïve ü".as_bytes()), "café/naïve ü");
        assert_eq!(shown(b""), "");
    }

    #[test]
    fn line_and_column_breaks_cannot_be_forged() {
        assert_eq!(shown(b"a\nb"), r"a\nb");
        assert_eq!(shown(b"a\tb\r"), r"a\tb\r");
        assert_eq!(shown(b"\x1b[31mred"), r"\033[31mred");
        assert_eq!(shown(b"del\x7f"), r"del\177");
        // C1 controls (U+009B is a one-character CSI on some terminals).
        assert_eq!(shown("x\u{9b}y".as_bytes()), r"x\302\233y");
        assert_eq!(
            shown("evil\u{202e}txt.exe".as_bytes()),
            r"evil\342\200\256txt.exe"
        );
    }

    #[test]
    fn backslashes_are_doubled_so_names_never_collide() {
        assert_eq!(shown(br"a\nb"), r"a\\nb");
        assert_ne!(shown(br"a\nb"), shown(b"a\nb"));
        assert_ne!(shown(br"\033"), shown(b"\x1b"));
    }

    #[test]
    fn undecodable_bytes_are_octal() {
        assert_eq!(shown(b"caf\xe9"), r"caf\351");
        assert_eq!(shown(b"\xff\xfe/ok"), r"\377\376/ok");
    }
}
