//! Limits that hold while JSON is read: nesting depth and the number of values are counted
//! in one pass over the bytes before any tree is built, so a body made of a million tiny
//! objects is refused without allocating for them; the same pass refuses a string holding a
//! NUL (`\u0000`), which no field carries and PostgreSQL text cannot store.

/// How much structure a JSON body may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Deepest nesting of objects and arrays.
    pub max_depth: usize,
    /// Most values (every object, array, member and element counts).
    pub max_values: usize,
}

impl Default for JsonLimits {
    /// Generous for any request the gateway takes (a FHIR resource or Parameters, a
    /// restriction), far below what would cost memory.
    fn default() -> Self {
        JsonLimits {
            max_depth: 32,
            max_values: 20_000,
        }
    }
}

/// Why a body was refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonLimitError {
    /// Nested deeper than allowed.
    #[error("JSON nested deeper than {limit} levels (at byte {at})")]
    TooDeep {
        /// The limit.
        limit: usize,
        /// Where it was crossed.
        at: usize,
    },
    /// More values than allowed.
    #[error("JSON with more than {limit} values (at byte {at})")]
    TooManyValues {
        /// The limit.
        limit: usize,
        /// Where it was crossed.
        at: usize,
    },
    /// A string holds a NUL character.
    #[error("a JSON string holds a NUL character (\\u0000) at byte {at}")]
    Nul {
        /// Where.
        at: usize,
    },
}

impl JsonLimitError {
    /// The machine code a client is answered with.
    pub fn code(&self) -> &'static str {
        match self {
            JsonLimitError::Nul { .. } => "INVALID_CHARACTER",
            _ => "JSON_TOO_COMPLEX",
        }
    }
}

/// Checks the structure of `bytes` against `limits` in one pass (strings and escapes are
/// skipped; a malformed body is left for the parser to name).
pub fn check(bytes: &[u8], limits: &JsonLimits) -> Result<(), JsonLimitError> {
    let (mut depth, mut values) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    // A value starts at the first non-space byte after `[`, `{`, `:`, `,` or at the start.
    let mut expecting = true;
    for (at, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, b'u') if bytes.get(at + 1..at + 5) == Some(b"0000") => {
                    return Err(JsonLimitError::Nul { at });
                }
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if b.is_ascii_whitespace() {
            continue;
        }
        if expecting && !matches!(b, b']' | b'}') {
            values += 1;
            if values > limits.max_values {
                return Err(JsonLimitError::TooManyValues {
                    limit: limits.max_values,
                    at,
                });
            }
        }
        expecting = false;
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limits.max_depth {
                    return Err(JsonLimitError::TooDeep {
                        limit: limits.max_depth,
                        at,
                    });
                }
                expecting = true;
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' | b':' => expecting = true,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_depth: usize, max_values: usize) -> JsonLimits {
        JsonLimits {
            max_depth,
            max_values,
        }
    }

    #[test]
    fn counts_values_and_depth_outside_strings() {
        let ok = br#"{"a": [1, 2, {"b": "x,[{y"}], "c": "\"{"}"#;
        assert_eq!(check(ok, &limits(3, 100)), Ok(()));
        // Ten values: keys count too.
        assert!(check(ok, &limits(3, 5)).is_err());
        assert!(matches!(
            check(ok, &limits(2, 100)),
            Err(JsonLimitError::TooDeep { limit: 2, .. })
        ));
        assert_eq!(check(b"[]", &limits(1, 1)), Ok(()));
        assert_eq!(check(b"{}", &limits(1, 1)), Ok(()));
    }

    #[test]
    fn a_million_tiny_objects_are_refused_early() {
        let body = format!("[{}{{}}]", "{},".repeat(1_000_000));
        let e = check(body.as_bytes(), &JsonLimits::default()).unwrap_err();
        match e {
            JsonLimitError::TooManyValues { at, .. } => assert!(at < 70_000, "{at}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            check(br#"{"a": "x\u0000"}"#, &JsonLimits::default()),
            Err(JsonLimitError::Nul { at: 9 })
        );
        assert_eq!(
            check(br#"["\\u0000", "\u00001"]"#, &limits(2, 10)),
            Err(JsonLimitError::Nul { at: 14 })
        );
        let deep = "[".repeat(100_000);
        assert!(matches!(
            check(deep.as_bytes(), &JsonLimits::default()),
            Err(JsonLimitError::TooDeep { at: 32, .. })
        ));
    }
}
