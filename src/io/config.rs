//! Config documents a person writes (TOML or JSON): parsed to a JSON value
//! and checked key by key against what the program knows, so a misspelt
//! name is refused with the closest valid one instead of silently ignored.

use serde_json::Value;

/// A key a document has that the program does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    /// Dotted path of the table holding it (`""` at the top).
    pub section: String,
    /// The key.
    pub name: String,
    /// The closest valid key there, if any is close.
    pub closest: Option<String>,
}

impl std::fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.section.is_empty() { String::new() } else { format!(" in [{}]", self.section) };
        write!(f, "unknown key `{}`{at}", self.name)?;
        if let Some(c) = &self.closest {
            write!(f, ": did you mean `{c}`?")?;
        }
        Ok(())
    }
}

/// Parses TOML, or JSON when `json`, into a JSON value.
pub fn parse_document(text: &str, json: bool) -> Result<Value, String> {
    if json {
        serde_json::from_str(text).map_err(|e| e.to_string())
    } else {
        let value: toml::Value = toml::from_str(text).map_err(|e| e.to_string())?;
        serde_json::to_value(value).map_err(|e| e.to_string())
    }
}

/// The keys of `doc` that `template` (the serialised defaults) lacks,
/// looking into nested tables that the template has as tables too.
pub fn unknown_keys(doc: &Value, template: &Value) -> Vec<UnknownKey> {
    fn walk(doc: &Value, template: &Value, section: &str, out: &mut Vec<UnknownKey>) {
        let (Value::Object(d), Value::Object(t)) = (doc, template) else { return };
        for (k, v) in d {
            match t.get(k) {
                None => {
                    let allowed: Vec<&str> = t.keys().map(String::as_str).collect();
                    out.push(UnknownKey { section: section.into(), name: k.clone(), closest: closest(k, &allowed) });
                }
                Some(tv) => walk(v, tv, &if section.is_empty() { k.clone() } else { format!("{section}.{k}") }, out),
            }
        }
    }
    let mut out = Vec::new();
    walk(doc, template, "", &mut out);
    out
}

/// The first of [`unknown_keys`].
pub fn unknown_key(doc: &Value, template: &Value) -> Option<UnknownKey> {
    unknown_keys(doc, template).into_iter().next()
}

/// The valid name nearest to `name`: most shared `_`-separated words
/// first (so `dropout_rate` finds `point_dropout_rate`), then edit distance.
pub fn closest(name: &str, allowed: &[&str]) -> Option<String> {
    let words: Vec<&str> = name.split('_').collect();
    allowed
        .iter()
        .map(|a| (a.split('_').filter(|w| words.contains(w)).count(), levenshtein(name, a), *a))
        .filter(|&(shared, dist, a)| shared > 0 || dist <= a.len() / 2)
        .min_by_key(|&(shared, dist, _)| (std::cmp::Reverse(shared), dist))
        .map(|(_, _, a)| a.to_string())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + (ca != *cb) as usize).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_unknown_keys_are_found_with_a_suggestion() {
        let template = serde_json::json!({"lr": 1.0, "vae": {"base_channels": 16, "latent_dim": 4}});
        let ok = serde_json::json!({"lr": 2.0, "vae": {"latent_dim": 8}});
        assert_eq!(unknown_key(&ok, &template), None);
        let bad = serde_json::json!({"vae": {"base_channel": 8}});
        let u = unknown_key(&bad, &template).unwrap();
        assert_eq!(
            (u.section.as_str(), u.name.as_str(), u.closest.as_deref()),
            ("vae", "base_channel", Some("base_channels"))
        );
        assert_eq!(u.to_string(), "unknown key `base_channel` in [vae]: did you mean `base_channels`?");
        let top = unknown_key(&serde_json::json!({"learning_rate": 1}), &template).unwrap();
        assert_eq!(top.closest, None);
    }

    #[test]
    fn toml_and_json_parse_to_the_same_value() {
        let a = parse_document("lr = 0.5\n[vae]\nlatent_dim = 4\n", false).unwrap();
        let b = parse_document(r#"{"lr": 0.5, "vae": {"latent_dim": 4}}"#, true).unwrap();
        assert_eq!(a, b);
        assert!(parse_document("lr = ", false).is_err());
    }
}
