//! Turning a member's raw path into the components of a path inside the tree.
//!
//! Archives say `./etc/`, `/abs/x`, `a//b` or `../../x`; unpackers treat them
//! all as paths below the root. Normalising lexically, with `..` clamped at
//! the root, keeps every path inside the tree whatever the archive says.

/// Splits `raw` into normal components: empty and `.` components dropped,
/// `..` removing the previous component and never climbing above the root.
///
/// An empty result names the root itself.
pub fn components(raw: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    push_components(&mut out, raw);
    out
}

/// Appends the components of `raw` to `out`, resolving `.` and `..` against
/// what `out` already holds (used to resolve a relative symlink target
/// against the directory that holds the link).
pub fn push_components<'a>(out: &mut Vec<&'a [u8]>, raw: &'a [u8]) {
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            name => out.push(name),
        }
    }
}

/// Whether a symlink target is absolute, i.e. resolved from the root.
pub fn is_absolute(target: &[u8]) -> bool {
    target.first() == Some(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(raw: &[u8]) -> Vec<u8> {
        components(raw).join(&b'/')
    }

    #[test]
    fn strips_dot_prefixes_and_slashes() {
        assert_eq!(joined(b"./etc/passwd"), b"etc/passwd");
        assert_eq!(joined(b"etc/"), b"etc");
        assert_eq!(joined(b"/abs//x/./y/"), b"abs/x/y");
        assert!(components(b"./").is_empty());
        assert!(components(b".").is_empty());
        assert!(components(b"").is_empty());
    }

    #[test]
    fn dotdot_never_climbs_above_the_root() {
        assert_eq!(joined(b"../../etc/passwd"), b"etc/passwd");
        assert_eq!(joined(b"a/b/../../../c"), b"c");
        assert_eq!(joined(b"a/b/../c"), b"a/c");
    }

    #[test]
    fn names_are_bytes() {
        assert_eq!(components(b"caf\xe9/x"), vec![&b"caf\xe9"[..], &b"x"[..]]);
    }

    #[test]
    fn relative_targets_resolve_against_a_base() {
        let mut base = components(b"usr/lib");
        push_components(&mut base, b"../bin/./sh");
        assert_eq!(base.join(&b'/'), b"usr/bin/sh");
        let mut base = components(b"a");
        push_components(&mut base, b"../../../../etc");
        assert_eq!(base.join(&b'/'), b"etc");
    }
}
