//! The searchset `Bundle`: entries with their full URLs, `self` and `next` links.

use serde_json::{json, Value};

/// A searchset `Bundle` with `self` and `next` links.
pub fn searchset(self_url: &str, next_url: Option<String>, entries: Vec<(String, Value)>) -> Value {
    let mut links = vec![json!({"relation": "self", "url": self_url})];
    if let Some(n) = next_url {
        links.push(json!({"relation": "next", "url": n}));
    }
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": entries.into_iter().map(|(full_url, r)| json!({
            "fullUrl": full_url, "resource": r, "search": {"mode": "match"}
        })).collect::<Vec<_>>(),
    })
}
