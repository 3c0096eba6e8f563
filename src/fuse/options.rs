//! The `-o` mount options layerfs accepts, and their defaults.

use fuser::{MountOption, SessionACL};

/// A `-o` option layerfs does not accept.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    /// Not an option layerfs knows.
    #[error("unknown mount option '{0}' (known: allow_other, allow_root, default_permissions, no_default_permissions, passthrough, no_passthrough, suid, nosuid, dev, nodev, exec, noexec, atime, noatime, ro, fsname=NAME, subtype=NAME)")]
    Unknown(String),
    /// An option asking for writes.
    #[error("mount option '{0}': layerfs mounts are read-only")]
    Writable(String),
}

/// The arguments of mount(2) for a FUSE mount, but the `/dev/fuse` fd.
#[derive(Debug)]
pub(super) struct KernelMount {
    pub fs_type: String,
    pub source: String,
    pub flags: libc::c_ulong,
    /// Comma-separated kernel options (`default_permissions`, ...).
    pub data: String,
}

/// How a stack is mounted.
///
/// Defaults: read-only, `nosuid`, `nodev`, `default_permissions` (the kernel
/// checks each file's mode, as on any disk filesystem), visible to the
/// mounting user only. `no_default_permissions` is for a user who mounts an
/// image to read all of it: every file the ACL lets through is then readable
/// whatever its mode and owner (layerfs itself checks nothing on open).
/// `no_passthrough` keeps every read of a directory layer's file in the
/// daemon (see `passthrough.rs`).
#[derive(Clone, Debug)]
pub struct MountOptions {
    acl: SessionACL,
    suid: bool,
    dev: bool,
    exec: bool,
    atime: bool,
    default_permissions: bool,
    passthrough: bool,
    /// The mount is the lower of a kernel overlay (`mount --upper`).
    overlay_lower: bool,
    fsname: String,
    subtype: String,
    threads: usize,
}

impl Default for MountOptions {
    fn default() -> MountOptions {
        MountOptions {
            acl: SessionACL::Owner,
            suid: false,
            dev: false,
            exec: true,
            atime: false,
            default_permissions: true,
            passthrough: true,
            overlay_lower: false,
            fsname: "layerfs".into(),
            subtype: "layerfs".into(),
            threads: std::thread::available_parallelism()
                .map_or(2, usize::from)
                .clamp(2, 8),
        }
    }
}

impl MountOptions {
    /// Applies a comma-separated `-o` list on top of these options.
    pub fn parse(&mut self, list: &str) -> Result<(), OptionError> {
        for option in list.split(',').filter(|o| !o.is_empty()) {
            match option {
                "allow_other" => self.acl = SessionACL::All,
                "allow_root" => self.acl = SessionACL::RootAndOwner,
                "default_permissions" => self.default_permissions = true,
                "no_default_permissions" => self.default_permissions = false,
                "passthrough" => self.passthrough = true,
                "no_passthrough" => self.passthrough = false,
                "suid" => self.suid = true,
                "nosuid" => self.suid = false,
                "dev" => self.dev = true,
                "nodev" => self.dev = false,
                "exec" => self.exec = true,
                "noexec" => self.exec = false,
                "atime" => self.atime = true,
                "noatime" => self.atime = false,
                "ro" => {}
                "rw" => return Err(OptionError::Writable(option.into())),
                _ => match option.split_once('=') {
                    Some(("fsname", name)) => self.fsname = name.into(),
                    Some(("subtype", name)) => self.subtype = name.into(),
                    _ => return Err(OptionError::Unknown(option.into())),
                },
            }
        }
        Ok(())
    }

    /// Sets the name shown as the mount's source in the mount table.
    pub fn set_fsname(&mut self, name: String) {
        self.fsname = name;
    }

    /// Sets how many threads serve requests (at least 1).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// Marks the mount as the lower of a kernel overlay: the kernel then
    /// allows one filesystem fewer below it (see `passthrough.rs`).
    pub fn set_overlay_lower(&mut self) {
        self.overlay_lower = true;
    }

    /// Whether directory layers' files may be read by the kernel itself
    /// (FUSE passthrough), and whether the mount is an overlay's lower.
    pub(super) fn passthrough(&self) -> (bool, bool) {
        (self.passthrough, self.overlay_lower)
    }

    pub(super) fn threads(&self) -> usize {
        self.threads
    }

    pub(super) fn acl(&self) -> SessionACL {
        self.acl
    }

    /// Whether the kernel checks each file's mode (`default_permissions`).
    pub(super) fn permission_checks(&self) -> bool {
        self.default_permissions
    }

    /// What mount(2) takes to mount these options directly: the type
    /// `fuse.SUBTYPE` and source FSNAME (as fusermount3 writes them), the
    /// flags, and the data string without its `fd=`.
    pub(super) fn kernel_mount(&self) -> KernelMount {
        let mut flags = libc::MS_RDONLY;
        for (off, flag) in [
            (!self.suid, libc::MS_NOSUID),
            (!self.dev, libc::MS_NODEV),
            (!self.exec, libc::MS_NOEXEC),
            (!self.atime, libc::MS_NOATIME),
        ] {
            if off {
                flags |= flag;
            }
        }
        let mut data = Vec::new();
        if self.default_permissions {
            data.push("default_permissions");
        }
        // The kernel knows only allow_other; fuser lets root alone through
        // for allow_root.
        if self.acl != SessionACL::Owner {
            data.push("allow_other");
        }
        KernelMount {
            fs_type: format!("fuse.{}", self.subtype),
            source: self.fsname.clone(),
            flags,
            data: data.join(","),
        }
    }

    pub(super) fn fuser_options(&self) -> Vec<MountOption> {
        let mut options = vec![
            MountOption::RO,
            MountOption::FSName(escape_for_fusermount(&self.fsname)),
            MountOption::Subtype(self.subtype.clone()),
            if self.suid {
                MountOption::Suid
            } else {
                MountOption::NoSuid
            },
            if self.dev {
                MountOption::Dev
            } else {
                MountOption::NoDev
            },
            if self.exec {
                MountOption::Exec
            } else {
                MountOption::NoExec
            },
            if self.atime {
                MountOption::Atime
            } else {
                MountOption::NoAtime
            },
        ];
        if self.default_permissions {
            options.push(MountOption::DefaultPermissions);
        }
        options
    }
}

/// `name` as an option value for fusermount3, which splits its `-o` list
/// at commas and takes `\` to escape the next character: a source holding
/// a ',' (or the `\:` of a ':' in a layer name) reaches the mount table
/// as given.
fn escape_for_fusermount(name: &str) -> String {
    backslash_escaped(name, &['\\', ','])
}

/// `text` with a `\` put before each of the `special` characters: the
/// escaping of fusermount3's options and of fstab's SOURCE alike.
pub(super) fn backslash_escaped(text: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_read_only_nosuid_nodev_with_permission_checks() {
        let options = MountOptions::default().fuser_options();
        for wanted in [
            MountOption::RO,
            MountOption::NoSuid,
            MountOption::NoDev,
            MountOption::DefaultPermissions,
        ] {
            assert!(options.contains(&wanted), "{wanted:?} missing");
        }
    }

    #[test]
    fn options_parse_and_override() {
        let mut o = MountOptions::default();
        o.parse("allow_other,suid,dev,fsname=img")
            .expect("valid options");
        assert_eq!(o.acl(), SessionACL::All);
        let fuser = o.fuser_options();
        assert!(fuser.contains(&MountOption::Suid) && fuser.contains(&MountOption::Dev));
        assert!(fuser.contains(&MountOption::FSName("img".into())));
    }

    #[test]
    fn permission_checks_can_be_turned_off_and_on_again() {
        let mut o = MountOptions::default();
        o.parse("no_default_permissions").expect("valid option");
        assert!(!o.fuser_options().contains(&MountOption::DefaultPermissions));
        o.parse("default_permissions").expect("valid option");
        assert!(o.fuser_options().contains(&MountOption::DefaultPermissions));
    }

    #[test]
    fn fusermount_gets_commas_and_backslashes_escaped() {
        let mut o = MountOptions::default();
        o.set_fsname("/l/a,b.tar:/l/c\\:d.tar".into());
        let fuser = o.fuser_options();
        let wanted = MountOption::FSName("/l/a\\,b.tar:/l/c\\\\:d.tar".into());
        assert!(fuser.contains(&wanted), "{fuser:?}");
        assert_eq!(o.kernel_mount().source, "/l/a,b.tar:/l/c\\:d.tar");
    }

    #[test]
    fn kernel_mounts_are_typed_fuse_layerfs_and_read_only() {
        let mut o = MountOptions::default();
        let kernel = o.kernel_mount();
        assert_eq!(kernel.fs_type, "fuse.layerfs");
        assert_eq!(kernel.data, "default_permissions");
        let wanted = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOATIME;
        assert_eq!(kernel.flags, wanted);
        o.parse("allow_root,no_default_permissions,noexec,subtype=img")
            .expect("valid options");
        let kernel = o.kernel_mount();
        assert_eq!(kernel.fs_type, "fuse.img");
        assert_eq!(kernel.data, "allow_other");
        assert_eq!(kernel.flags & libc::MS_NOEXEC, libc::MS_NOEXEC);
    }

    #[test]
    fn passthrough_is_on_unless_turned_off() {
        let mut o = MountOptions::default();
        assert_eq!(o.passthrough(), (true, false));
        o.parse("no_passthrough").expect("valid option");
        o.set_overlay_lower();
        assert_eq!(o.passthrough(), (false, true));
        o.parse("passthrough").expect("valid option");
        assert_eq!(o.passthrough(), (true, true));
        // Not the kernel's: never handed to mount(2) or fusermount3.
        assert_eq!(o.kernel_mount().data, "default_permissions");
    }

    #[test]
    fn writable_and_unknown_options_are_refused() {
        let mut o = MountOptions::default();
        assert!(matches!(o.parse("rw"), Err(OptionError::Writable(_))));
        assert!(matches!(o.parse("bogus"), Err(OptionError::Unknown(_))));
    }
}
