//! The man page and the CLI must not drift apart: every subcommand and every
//! option `layerfs ... --help` shows is documented in `man/layerfs.1`, and
//! every option the man page documents exists. Also checks that the
//! completion scripts are generated for each shell, and that usage errors
//! exit with the status the man page gives.

mod common;

use std::collections::BTreeSet;

use common::mount::layerfs;
use common::{Layer, Layers};

const MAN_PAGE: &str = include_str!("../man/layerfs.1");

/// The man page as plain text: troff's `\-` is a hyphen, font switches go.
fn man_text() -> String {
    let mut text = MAN_PAGE.replace("\\-", "-");
    for font in ["\\fB", "\\fI", "\\fR", "\\fP"] {
        text = text.replace(font, "");
    }
    text
}

/// Subcommands listed by `layerfs --help`.
fn subcommands() -> Vec<String> {
    let run = layerfs(["--help"]);
    run.expect_success("--help");
    run.stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Long options (`--name`) in a help text's option lines.
fn long_options(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| {
            let start = l.find("--")?;
            let name: String = l[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            (name.len() > 2).then_some(name)
        })
        .filter(|name| name != "--help" && name != "--version")
        .collect()
}

#[test]
fn every_subcommand_and_option_is_in_the_man_page() {
    let man = man_text();
    let commands = subcommands();
    assert!(commands.len() >= 4, "{commands:?}");
    let mut missing = Vec::new();
    for command in &commands {
        if !man.contains(&format!(".B {command}\n")) {
            missing.push(format!("subcommand {command} (.B {command})"));
        }
        let run = layerfs([command.as_str(), "--help"]);
        run.expect_success(&format!("{command} --help"));
        for option in long_options(&run.stdout) {
            if !man.contains(&option) {
                missing.push(format!("{command} {option}"));
            }
        }
    }
    assert!(missing.is_empty(), "not in man/layerfs.1: {missing:?}");
}

#[test]
fn every_option_in_the_man_page_exists() {
    let mut known: BTreeSet<String> = long_options(&layerfs(["--help"]).stdout);
    for command in subcommands() {
        known.extend(long_options(&layerfs([command.as_str(), "--help"]).stdout));
    }
    let man = man_text();
    // Options the page defines: its synopsis, and the heading line after
    // each `.TP` (prose may mention other tools' options).
    let lines: Vec<&str> = man.lines().collect();
    let synopsis = lines
        .iter()
        .skip_while(|l| !l.starts_with(".SH SYNOPSIS"))
        .take_while(|l| !l.starts_with(".SH DESCRIPTION"));
    let headings = lines
        .windows(2)
        .filter(|w| w[0].starts_with(".TP"))
        .map(|w| &w[1]);
    let documented: BTreeSet<String> = synopsis
        .chain(headings)
        .flat_map(|l| {
            l.match_indices("--")
                .map(|(i, _)| {
                    l[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
        })
        .filter(|o| o.len() > 2 && o != "--help" && o != "--version")
        .collect();
    let stale: Vec<_> = documented.difference(&known).collect();
    assert!(stale.is_empty(), "documented but not accepted: {stale:?}");
}

#[test]
fn completion_scripts_are_generated_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _layerfs"),
        ("zsh", "#compdef layerfs"),
        ("fish", "complete -c layerfs"),
    ] {
        let run = layerfs(["completions", shell]);
        run.expect_success(shell);
        assert!(run.stdout.contains(marker), "{shell}: no {marker:?}");
        assert!(
            run.stdout.contains("export"),
            "{shell}: subcommands missing"
        );
    }
    let run = layerfs(["completions", "tcsh"]);
    assert!(!run.status.success());
}

/// EXIT STATUS says 2 for a usage error: the arguments clap checks and the
/// ones layerfs checks itself alike, each with one line on stderr.
#[test]
fn every_usage_error_exits_2() {
    require!(Root);
    let mut layers = Layers::new();
    layers.add(&Layer::default().file("f", "x"));
    let layer = layers.paths[0].to_str().expect("utf-8 temp path");
    let mnt = layers.dir().join("mnt");
    std::fs::create_dir(&mnt).expect("mountpoint");
    let mnt = mnt.to_str().expect("utf-8 temp path");
    for (args, message) in [
        (
            vec!["mount", "-o", "allow_others", layer, mnt],
            "layerfs: unknown mount option 'allow_others'",
        ),
        (
            vec!["ls", "--peek", "1Q", layer],
            "layerfs: --peek 1Q: not a byte count",
        ),
        (
            vec!["ls", "--layer", "0", layer],
            "layerfs: --layer 0: there is 1 layer (1 = bottom)",
        ),
        (
            vec!["ls", "--digest", "3=sha256:00", layer],
            "layerfs: --digest \"3=sha256:00\": there is no layer 3",
        ),
        (
            vec!["ls", "--bogus", layer],
            "error: unexpected argument '--bogus'",
        ),
        (
            vec!["index", "import", "--no-cache", layer],
            "error: unexpected argument '--no-cache'",
        ),
    ] {
        let run = layerfs(&args);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {run:?}");
        assert!(
            run.stderr.starts_with(message),
            "{args:?}: {:?}",
            run.stderr
        );
    }
    assert!(!common::mount::is_mounted(std::path::Path::new(mnt)));
}

/// The man page's entry for `option`: from its `.TP` heading to the next
/// `.TP`, `.SH` or `.SS`, as plain lower-case words.
fn man_entry(man: &str, option: &str) -> Option<String> {
    let lines: Vec<&str> = man.lines().collect();
    let start = lines.windows(2).position(|w| {
        w[0].starts_with(".TP")
            && w[1]
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .any(|word| word == option)
    })?;
    let entry: Vec<&str> = lines[start + 1..]
        .iter()
        .take_while(|l| !(l.starts_with(".TP") || l.starts_with(".SH") || l.starts_with(".SS")))
        .copied()
        .collect();
    Some(entry.join(" ").to_lowercase())
}

/// The words of a default worth comparing: names, not glue.
fn significant_words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.len() >= 4 && !["from", "with", "than"].contains(w))
        .map(str::to_lowercase)
        .collect()
}

/// Each `(default: ...)` that `--help` gives is the one the man page gives:
/// every name in it appears in the option's man entry.
#[test]
fn every_default_in_the_help_is_the_man_pages() {
    let man = man_text();
    let mut helps = vec![layerfs(["--help"]).stdout];
    for command in subcommands() {
        helps.push(layerfs([command.as_str(), "--help"]).stdout);
    }
    for sub in ["export", "import"] {
        helps.push(layerfs(["index", sub, "--help"]).stdout);
    }
    let mut drift = Vec::new();
    let mut checked = 0;
    for line in helps.iter().flat_map(|h| h.lines()).map(str::trim_start) {
        let (Some(option), Some(at)) = (
            line.split_whitespace().find(|w| w.starts_with("--")),
            line.find("(default: "),
        ) else {
            continue;
        };
        let option = option.trim_end_matches(',');
        let default = &line[at + "(default: ".len()..];
        let default = default.rsplit_once(')').map_or(default, |(d, _)| d);
        let Some(entry) = man_entry(&man, option) else {
            drift.push(format!("{option}: no man page entry"));
            continue;
        };
        checked += 1;
        for word in significant_words(default) {
            if !entry.contains(&word) {
                drift.push(format!("{option}: help's default {default:?} ({word})"));
            }
        }
    }
    assert!(checked >= 5, "only {checked} defaults found in --help");
    drift.sort();
    drift.dedup();
    assert!(drift.is_empty(), "man/layerfs.1 says otherwise: {drift:?}");
}

/// What the commands take: the codecs and image kinds the top-level help
/// names are the man page's; the commands taking LAYER are those the man
/// page says take images, each with the image options; `inspect` takes a
/// registry reference as the man page says.
#[test]
fn the_help_and_the_man_page_name_the_same_inputs() {
    let man = man_text();
    let top = layerfs(["--help"]).stdout;
    let description: String = man
        .lines()
        .skip_while(|l| !l.starts_with(".SH DESCRIPTION"))
        .take_while(|l| !l.starts_with(".SS"))
        .collect::<Vec<_>>()
        .join(" ");
    for codec in ["gzip", "zstd", "bzip2", "xz", "lz4"] {
        assert!(top.contains(codec), "--help does not name {codec}");
        assert!(
            description.contains(codec),
            "DESCRIPTION does not name {codec}"
        );
    }
    for kind in [
        "OCI layout",
        "docker save",
        "registry reference",
        "directory",
    ] {
        assert!(top.contains(kind), "--help does not name {kind}: {top}");
    }
    let taking = man
        .lines()
        .find_map(|l| l.strip_prefix("is taken ("))
        .and_then(|l| l.split_once(')'))
        .map(|(list, _)| {
            list.split(", ")
                .map(str::to_string)
                .collect::<BTreeSet<_>>()
        })
        .expect("Images: \"is taken (COMMANDS)\"");
    let mut with_layers = BTreeSet::new();
    for command in subcommands() {
        let help = layerfs([command.as_str(), "--help"]).stdout;
        if help.contains("<LAYER>") {
            with_layers.insert(command.clone());
        }
    }
    if layerfs(["index", "export", "--help"])
        .stdout
        .contains("<LAYER>")
    {
        with_layers.insert("index export".to_string());
    }
    assert_eq!(with_layers, taking, "commands taking LAYER: help vs man");
    for command in &with_layers {
        let args: Vec<&str> = command.split(' ').chain(["--help"]).collect();
        let options = long_options(&layerfs(args).stdout);
        for wanted in ["--platform", "--creds", "--insecure"] {
            assert!(options.contains(wanted), "{command} lacks {wanted}");
        }
    }
    let inspect = layerfs(["inspect", "--help"]).stdout;
    assert!(inspect.contains("registry reference"), "{inspect}");
}
