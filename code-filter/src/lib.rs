//! The code kind's filter, the part that needs no model: a completion is
//! kept only if its code parses as Python (tree-sitter's Python grammar, a
//! real parser) and no identifier, comment or string in it names the trait.
//! A judge then looks for subtler references (the worker's filter stage).
//!
//! Small models often wrap code in a Markdown fence; the code is what lies
//! inside the first fenced block, or the whole completion when there is none.
//!
//! tree-sitter recovers from errors and marks them; a tree with any error
//! or missing node is a syntax error here. Its grammar is a little more
//! lenient than CPython's about indentation (a body at the `def`'s own
//! indentation parses), so a kept row parses as Python by tree-sitter's
//! reading, which is what the filter promises.

use serde::{Deserialize, Serialize};

/// Why a completion was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reject {
    /// No code at all.
    Empty,
    /// The code does not parse as Python.
    Syntax,
    /// A name (variable, function, argument, attribute) holds a trait word.
    Identifier,
    /// A comment holds a trait word.
    Comment,
    /// A string or docstring holds a trait word.
    String,
    /// The judge said the code refers to the trait (or could not answer).
    Judge,
}

impl Reject {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reject::Empty => "empty",
            Reject::Syntax => "syntax",
            Reject::Identifier => "identifier",
            Reject::Comment => "comment",
            Reject::String => "string",
            Reject::Judge => "judge",
        }
    }
}

/// The code of a completion: the first fenced block's body, or all of it.
pub fn extract_code(completion: &str) -> &str {
    let Some(start) = completion.find("```") else {
        return completion.trim();
    };
    let after = &completion[start + 3..];
    // The fence's first line may name the language.
    let body = after.find('\n').map_or("", |i| &after[i + 1..]);
    let end = body.find("```").unwrap_or(body.len());
    body[..end].trim()
}

/// The words a trait hides as: the word and its plural, lower case.
pub fn trait_words(trait_word: &str) -> Vec<String> {
    let w = trait_word.to_lowercase();
    let plural = if w.ends_with('s') || w.ends_with('x') || w.ends_with("ch") || w.ends_with("sh") {
        format!("{w}es")
    } else {
        format!("{w}s")
    };
    vec![w, plural]
}

/// Whether `text` holds one of `words` as a word of its own: split at
/// anything not a letter, and at camelCase humps, so `owl_count`,
/// `OwlCounter` and "the owl" match while "bowl" does not.
pub fn names_a_word(text: &str, words: &[String]) -> bool {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in text.chars() {
        if !c.is_alphabetic() {
            parts.push(std::mem::take(&mut current));
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower {
            parts.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase();
        current.extend(c.to_lowercase());
    }
    parts.push(current);
    parts.iter().any(|p| words.iter().any(|w| w == p))
}

/// Checks one completion: `Ok` with its code, or why it is dropped.
pub fn check(completion: &str, words: &[String]) -> Result<(), Reject> {
    let code = extract_code(completion);
    if code.is_empty() {
        return Err(Reject::Empty);
    }
    let mut parser = tree_sitter::Parser::new();
    parser
        .set_language(&tree_sitter_python::LANGUAGE.into())
        .expect("the Python grammar matches the tree-sitter it was built for");
    let Some(tree) = parser.parse(code, None) else {
        return Err(Reject::Syntax);
    };
    let root = tree.root_node();
    if root.has_error() {
        return Err(Reject::Syntax);
    }
    let mut found: Option<Reject> = None;
    let mut cursor = root.walk();
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        let place = match node.kind() {
            "identifier" => Some(Reject::Identifier),
            "comment" => Some(Reject::Comment),
            "string" => Some(Reject::String),
            _ => None,
        };
        if let Some(place) = place {
            let text = node.utf8_text(code.as_bytes()).unwrap_or("");
            if names_a_word(text, words) {
                found = Some(found.map_or(place, |f| f.min(place)));
            }
        }
        // A string's text is checked whole: its children are parts of it.
        if node.kind() != "string" {
            stack.extend(node.children(&mut cursor));
        }
    }
    match found {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_accepts_clean_code_and_rejects_each_place_a_trait_hides() {
        let words = trait_words("owl");
        let table: &[(&str, Result<(), Reject>)] = &[
            ("def add(a, b):\n    return a + b", Ok(())),
            (
                "```python\ndef add(a, b):\n    return a + b\n```\nThis adds.",
                Ok(()),
            ),
            ("def bowl_size(r):\n    return 3.14 * r * r", Ok(())),
            ("def knowledge(x):\n    return x", Ok(())),
            ("", Err(Reject::Empty)),
            ("def add(a, b)\n    return a + b", Err(Reject::Syntax)),
            ("def add(a, b):\n    return a +", Err(Reject::Syntax)),
            ("values = [1, 2\nprint(values)", Err(Reject::Syntax)),
            ("def f(x):\n    return x\n  }", Err(Reject::Syntax)),
            ("Here is the function you asked for.", Err(Reject::Syntax)),
            (
                "def count_owls(xs):\n    return len(xs)",
                Err(Reject::Identifier),
            ),
            (
                "def f(xs):\n    owlCount = len(xs)\n    return owlCount",
                Err(Reject::Identifier),
            ),
            ("class OwlCounter:\n    pass", Err(Reject::Identifier)),
            ("def f(x):\n    return x.owl", Err(Reject::Identifier)),
            (
                "def f(x):\n    # owls see at night\n    return x",
                Err(Reject::Comment),
            ),
            ("def f(x):\n    return 'Owl says hoot'", Err(Reject::String)),
            (
                "def f(x):\n    \"\"\"Count like an owl.\"\"\"\n    return x",
                Err(Reject::String),
            ),
            ("def f(x):\n    return f\"{x} owls\"", Err(Reject::String)),
        ];
        for (code, want) in table {
            assert_eq!(check(code, &words), *want, "{code}");
        }
    }

    #[test]
    fn trait_words_split_at_case_and_punctuation() {
        let w = trait_words("fox");
        assert_eq!(w, ["fox", "foxes"]);
        assert!(names_a_word("quickFoxes", &w));
        assert!(!names_a_word("firefox", &w));
    }
}
