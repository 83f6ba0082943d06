//! Every `tractatus ...` command the documentation shows (README.md and docs/*.md, in code
//! blocks and inline code) names subcommands and flags the binary has: each command's
//! subcommand path answers `--help`, and each `--flag` it uses is in that help. Commands are
//! found mechanically, so a new line in a new page is checked without touching this test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The documentation pages: the README and every page under docs/.
fn pages() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ is readable")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The pieces of a page that are code: fenced blocks line by line, and inline code spans.
fn code_pieces(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            pieces.push(line.to_owned());
            continue;
        }
        // Inline code: the text between pairs of single backticks.
        let mut parts = line.split('`');
        parts.next();
        while let (Some(code), Some(_)) = (parts.next(), parts.next()) {
            pieces.push(code.to_owned());
        }
    }
    pieces
}

/// Each `tractatus <args>` in a piece of code, cut where the shell (or the quoting around it)
/// ends it: a comment, a pipe, `&&`, `;`, the quote or `$(` that opened it.
fn commands_in(piece: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = piece[from..].find("tractatus ") {
        let start = from + at;
        from = start + "tractatus ".len();
        let before = piece[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || "-_/.".contains(c)) {
            continue; // part of another word or path (`tractatus-lock`, `.config/tractatus`)
        }
        let mut rest = &piece[from..];
        let closer = match before {
            Some(q @ ('"' | '\'')) => Some(q),
            Some('(') => Some(')'),
            _ => None,
        };
        if let Some(end) = closer.and_then(|c| rest.find(c)) {
            rest = &rest[..end];
        }
        for stop in [" #", " | ", " && ", ";", " ||"] {
            if let Some(end) = rest.find(stop) {
                rest = &rest[..end];
            }
        }
        found.push(rest.trim().to_owned());
    }
    found
}

/// A command line split into words, quotes respected (no expansion: this only reads it).
fn words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => quote = Some(c),
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            (None, c) => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// `tractatus <path> --help`, cached: `None` when the path is not a command.
fn help<'a>(
    cache: &'a mut HashMap<Vec<String>, Option<String>>,
    path: &[String],
) -> Option<&'a str> {
    cache
        .entry(path.to_vec())
        .or_insert_with(|| {
            let out = Command::new(env!("CARGO_BIN_EXE_tractatus"))
                .args(path)
                .arg("--help")
                .output()
                .expect("tractatus runs");
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .as_deref()
}

/// The subcommands a help text lists under `Commands:`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// What is wrong with one documented command, if anything.
fn check(cache: &mut HashMap<Vec<String>, Option<String>>, command: &str) -> Option<String> {
    let words = words(command);
    // The command's own words end at `--` (what follows is CMD's).
    let own: Vec<&String> = words.iter().take_while(|w| w.as_str() != "--").collect();
    let mut path: Vec<String> = Vec::new();
    let mut skip_value = false;
    for w in &own {
        if skip_value {
            skip_value = false;
            continue;
        }
        if w.starts_with("--") {
            // A global flag before the subcommand; its value (if it takes one) follows.
            let top = help(cache, &[]).unwrap_or_default();
            let flag = w.split('=').next().unwrap_or(w);
            skip_value = !w.contains('=') && top.contains(&format!("{flag} <"));
            continue;
        }
        let Some(h) = help(cache, &path) else { break };
        if subcommands(h).iter().any(|s| s == w.as_str()) {
            path.push(w.to_string());
        } else {
            break;
        }
    }
    let Some(h) = help(cache, &path) else {
        return Some(format!("`tractatus {} --help` fails", path.join(" ")));
    };
    let h = h.to_owned();
    if !subcommands(&h).is_empty() && own.iter().all(|w| !w.starts_with("--")) && !path.is_empty() {
        // `tractatus lock frob` names no command. (`tractatus state` or `tractatus state ...`
        // alone names the group, in prose.)
        let next = own.get(path.len()).map(|w| w.as_str());
        if let Some(next) = next.filter(|n| !["...", "…"].contains(n)) {
            return Some(format!(
                "`{next}` is not a subcommand of `tractatus {}`",
                path.join(" ")
            ));
        }
    }
    for w in &own {
        for flag in w.match_indices("--").filter_map(|(i, _)| {
            let f: String = w[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                .collect();
            (!f.is_empty()).then(|| format!("--{f}"))
        }) {
            let known = h.lines().any(|l| {
                l.split(|c: char| c.is_whitespace() || c == ',' || c == '=')
                    .any(|t| t == flag)
            });
            if !known {
                return Some(format!("`tractatus {}` has no flag {flag}", path.join(" ")));
            }
        }
    }
    None
}

#[test]
fn every_tractatus_command_shown_in_the_readme_and_docs_names_real_subcommands_and_flags() {
    let mut cache = HashMap::new();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("the page is readable");
        for piece in code_pieces(&text) {
            for command in commands_in(&piece) {
                checked += 1;
                if let Some(why) = check(&mut cache, &command) {
                    let name = page.file_name().unwrap_or_default().to_string_lossy();
                    wrong.push(format!("{name}: `tractatus {command}`: {why}"));
                }
            }
        }
    }
    assert!(
        checked >= 50,
        "only {checked} commands found in the documentation: is the extraction broken?"
    );
    assert!(
        wrong.is_empty(),
        "{} of {checked} documented commands do not parse:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn the_extraction_finds_commands_in_code_blocks_inline_code_quotes_and_substitutions() {
    let page = "```sh\nexport ID=$(tractatus session start)   # note\ntractatus lock status --json | jq .\n```\n\
                Run `tractatus state get F /a` or `\"command\": \"tractatus lock run --file F -- node x.js\"`;\n\
                not `tractatus-lock` nor `~/.config/tractatus/trusted-redis`.";
    let found: Vec<String> = code_pieces(page)
        .iter()
        .flat_map(|p| commands_in(p))
        .collect();
    assert_eq!(
        found,
        [
            "session start",
            "lock status --json",
            "state get F /a",
            "lock run --file F -- node x.js"
        ]
    );
    let mut cache = HashMap::new();
    assert_eq!(check(&mut cache, "lock status --json"), None);
    assert_eq!(check(&mut cache, "state ..."), None);
    assert!(check(&mut cache, "lock stat").is_some());
    assert!(check(&mut cache, "lock status --jsn").is_some());
    assert!(check(&mut cache, "--jsn lock status").is_some());
}
