//! The guide in `docs/` as its readers meet it: mdBook builds it, every link
//! between its pages (and the README's) leads to a file that exists, and
//! every sweep it shows is one `subliminal validate` would accept.

use std::path::{Path, PathBuf};
use std::process::Command;

use subliminal_shared::spec::Source;
use subliminal_shared::sweep;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The guide's chapters and the README, with their text.
fn pages() -> Vec<(PathBuf, String)> {
    let src = root().join("docs/src");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&src)
        .expect("docs/src exists")
        .map(|e| e.expect("a readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages.push(root().join("README.md"));
    pages
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("a readable page");
            (p, text)
        })
        .collect()
}

/// The fenced blocks of `lang` in a page, with the line each starts on.
fn blocks(text: &str, lang: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match (&mut open, line.trim_start().strip_prefix("```")) {
            (None, Some(tag)) if tag.trim() == lang => open = Some((n + 1, String::new())),
            (Some(_), Some(_)) => out.extend(open.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// Where `mdbook` is: `$MDBOOK` (scripts/env.sh sets it), else the copy
/// scripts/setup-services.sh builds.
fn mdbook() -> PathBuf {
    std::env::var_os("MDBOOK")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/subliminal/tools/bin/mdbook")
        })
}

#[test]
fn mdbook_builds_the_guide_with_every_chapter_of_its_summary() {
    let out = tempfile::tempdir().unwrap();
    let ran = Command::new(mdbook())
        .arg("build")
        .arg(root().join("docs"))
        .arg("--dest-dir")
        .arg(out.path())
        .output()
        .expect("mdbook runs (scripts/setup-services.sh installs it)");
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(ran.status.success(), "mdbook build docs failed:\n{stderr}");
    assert!(
        !stderr.contains("WARN") && !stderr.contains("ERROR"),
        "{stderr}"
    );
    let summary = std::fs::read_to_string(root().join("docs/src/SUMMARY.md")).unwrap();
    let chapters: Vec<&str> = summary
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .collect();
    assert!(chapters.len() >= 10, "{chapters:?}");
    for chapter in &chapters {
        let html = out.path().join(chapter.replace(".md", ".html"));
        let page = std::fs::read_to_string(&html)
            .unwrap_or_else(|e| panic!("{} was not built: {e}", html.display()));
        assert!(page.contains("<h1"), "{} has no title", html.display());
    }
    // Every chapter in docs/src is in the summary: none is left unreachable.
    for (page, _) in pages() {
        let name = page.file_name().unwrap().to_str().unwrap();
        if page.starts_with(root().join("docs/src")) && name != "SUMMARY.md" {
            assert!(chapters.contains(&name), "{name} is not in SUMMARY.md");
        }
    }
}

#[test]
fn every_relative_link_and_picture_leads_to_a_file() {
    let mut checked = 0;
    for (page, text) in pages() {
        let dir = page.parent().unwrap();
        let mut code = false;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                code = !code;
            }
            if code {
                continue;
            }
            for target in line
                .split("](")
                .skip(1)
                .filter_map(|rest| rest.split(')').next())
            {
                let path = target.split('#').next().unwrap_or_default();
                if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
                    continue;
                }
                assert!(
                    dir.join(path).exists(),
                    "{}:{}: the link {target:?} leads to no file",
                    page.display(),
                    n + 1
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} links found");
}

#[test]
fn every_sweep_the_guide_shows_is_valid() {
    let mut sweeps = 0;
    for (page, text) in pages() {
        for (line, block) in blocks(&text, "toml") {
            let at = format!("{}:{line}", page.display());
            // A stored file's key is written as a placeholder in the guide:
            // each gets a well-formed key of its own.
            let mut n = 0;
            let mut concrete = block.clone();
            for placeholder in ["\"stage:…\"", "\"stage:<id>\""] {
                while let Some(i) = concrete.find(placeholder) {
                    n += 1;
                    let key = format!("\"stage:{:064x}\"", n);
                    concrete.replace_range(i..i + placeholder.len(), &key);
                }
            }
            let table: toml::Table = concrete
                .parse()
                .unwrap_or_else(|e| panic!("{at}: the block is not TOML: {e}"));
            if !(table.contains_key("kind") && table.contains_key("name")) {
                continue; // a fragment of a sweep, shown beside its example file
            }
            let sweep = sweep::parse(&Source::new(&at, concrete))
                .unwrap_or_else(|e| panic!("{at}: the sweep is refused: {e}"));
            assert!(sweep.plan().trials > 0, "{at}: no trial");
            sweeps += 1;
        }
    }
    assert!(sweeps >= 3, "only {sweeps} sweeps found");
}
