//! The man page and the CLI must not drift apart: every subcommand and every
//! option `layerfs ... --help` shows is documented in `man/layerfs.1`, and
//! every option the man page documents exists. Also checks that the
//! completion scripts are generated for each shell.

mod common;

use std::collections::BTreeSet;

use common::mount::layerfs;

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
