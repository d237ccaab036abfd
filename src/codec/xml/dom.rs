//! A small, bounded XML tree for message parsing.
//!
//! The parser refuses anything that could make it do unbounded work or reach outside the
//! message: DTDs (so no external entities and no entity expansion bombs), references to
//! undeclared entities, non-UTF-8 input, and input over the size, depth, element, attribute
//! or text limits. Names are namespace-resolved.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

/// Bounds a parse must stay within.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest input in bytes.
    pub max_bytes: usize,
    /// Deepest element nesting.
    pub max_depth: usize,
    /// Most elements in a document.
    pub max_elements: usize,
    /// Most attributes on one element.
    pub max_attributes: usize,
    /// Largest text content of one element, in bytes.
    pub max_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 10 * 1024 * 1024,
            max_depth: 64,
            max_elements: 200_000,
            max_attributes: 64,
            max_text_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed; the message says where.
    #[error("malformed XML at byte {position}: {message}")]
    Malformed {
        /// Byte offset of the problem.
        position: u64,
        /// Parser message.
        message: String,
    },
    /// A DTD was present: refused to rule out external entities and entity bombs.
    #[error("DOCTYPE declarations are not accepted (no DTDs, no external entities)")]
    Doctype,
    /// A reference to an entity other than the five predefined ones.
    #[error("reference to undeclared entity &{0};")]
    Entity(String),
    /// Input is not UTF-8.
    #[error("document must be UTF-8 encoded")]
    Encoding,
    /// A limit was exceeded.
    #[error("document exceeds the {what} limit of {limit}")]
    Limit {
        /// Which limit.
        what: &'static str,
        /// Its value.
        limit: usize,
    },
    /// A prefix used without a namespace declaration.
    #[error("undeclared namespace prefix {0:?}")]
    UnknownPrefix(String),
    /// No root element.
    #[error("document has no root element")]
    Empty,
}

/// An element with resolved namespace, attributes, text and children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// Namespace URI, empty when unqualified.
    pub ns: String,
    /// Local name.
    pub name: String,
    /// Attributes as (namespace URI, local name, value); namespace declarations excluded.
    pub attrs: Vec<(String, String, String)>,
    /// Concatenated character data directly inside this element.
    pub text: String,
    /// Child elements in document order.
    pub children: Vec<Element>,
}

impl Element {
    /// First child with this local name, in any namespace.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// First child with this namespace and local name.
    pub fn child_ns(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.ns == ns && c.name == name)
    }

    /// All children with this local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Trimmed text of the first child with this local name; `None` when absent or blank.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name)
            .map(|c| c.text.trim())
            .filter(|t| !t.is_empty())
    }

    /// Value of an unqualified attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(ns, n, _)| ns.is_empty() && n == name)
            .map(|(_, _, v)| v.as_str())
    }

    /// Value of a namespaced attribute.
    pub fn attr_ns(&self, ns: &str, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(a, n, _)| a == ns && n == name)
            .map(|(_, _, v)| v.as_str())
    }

    /// Follows a path of local names from this element.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        let mut cur = self;
        for n in names {
            cur = cur.child(n)?;
        }
        Some(cur)
    }
}

/// Parses a whole document into its root element.
pub fn parse(input: &[u8], limits: &Limits) -> Result<Element, XmlError> {
    if input.len() > limits.max_bytes {
        return Err(XmlError::Limit {
            what: "size (bytes)",
            limit: limits.max_bytes,
        });
    }
    let text = std::str::from_utf8(input).map_err(|_| XmlError::Encoding)?;
    // NUL is no XML character (and PostgreSQL text cannot hold one).
    if let Some(at) = input.iter().position(|b| *b == 0) {
        return Err(XmlError::Malformed {
            position: at as u64,
            message: "NUL is not an XML character".into(),
        });
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = NsReader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    let malformed = |reader: &NsReader<&[u8]>, e: &dyn std::fmt::Display| XmlError::Malformed {
        position: reader.error_position(),
        message: e.to_string(),
    };
    loop {
        let step = reader.read_resolved_event().map(|(res, ev)| {
            let ns = match res {
                ResolveResult::Bound(ns) => Ok(ns.0.to_string()),
                ResolveResult::Unbound => Ok(String::new()),
                ResolveResult::Unknown(p) => Err(XmlError::UnknownPrefix(p)),
            };
            (ns, ev)
        });
        let (ns, event) = match step {
            Ok(x) => x,
            Err(e) => return Err(malformed(&reader, &e)),
        };
        let ns = match (&event, ns) {
            (Event::Start(_) | Event::Empty(_), Err(e)) => return Err(e),
            (_, ns) => ns.unwrap_or_default(),
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                elements += 1;
                if elements > limits.max_elements {
                    return Err(XmlError::Limit {
                        what: "element count",
                        limit: limits.max_elements,
                    });
                }
                if stack.len() >= limits.max_depth {
                    return Err(XmlError::Limit {
                        what: "nesting depth",
                        limit: limits.max_depth,
                    });
                }
                if root.is_some() {
                    return Err(XmlError::Malformed {
                        position: reader.buffer_position(),
                        message: "content after the root element".into(),
                    });
                }
                let el = start_element(&reader, ns, e, limits)?;
                if matches!(event, Event::Empty(_)) {
                    close(&mut stack, &mut root, el);
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let Some(el) = stack.pop() else {
                    return Err(XmlError::Malformed {
                        position: reader.buffer_position(),
                        message: "unexpected end tag".into(),
                    });
                };
                close(&mut stack, &mut root, el);
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    push_text(top, &t.xml10_content(), limits)?;
                } else if !t.trim().is_empty() {
                    return Err(XmlError::Malformed {
                        position: reader.buffer_position(),
                        message: "text outside the root element".into(),
                    });
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    push_text(top, &t.into_inner(), limits)?;
                }
            }
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => match &*r.into_inner() {
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "amp" => "&".into(),
                        "apos" => "'".into(),
                        "quot" => "\"".into(),
                        other => return Err(XmlError::Entity(other.chars().take(32).collect())),
                    },
                    Err(e) => return Err(malformed(&reader, &e)),
                };
                if let Some(top) = stack.last_mut() {
                    push_text(top, &ch, limits)?;
                }
            }
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Decl(d) => {
                if let Some(Ok(enc)) = d.encoding() {
                    let enc = enc.to_ascii_lowercase();
                    if enc != "utf-8" && enc != "utf8" {
                        return Err(XmlError::Encoding);
                    }
                }
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed {
            position: reader.buffer_position(),
            message: format!(
                "unclosed element <{}>",
                stack.last().map(|e| e.name.as_str()).unwrap_or("")
            ),
        });
    }
    root.ok_or(XmlError::Empty)
}

fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

fn push_text(el: &mut Element, s: &str, limits: &Limits) -> Result<(), XmlError> {
    if el.text.len() + s.len() > limits.max_text_bytes {
        return Err(XmlError::Limit {
            what: "text size (bytes)",
            limit: limits.max_text_bytes,
        });
    }
    el.text.push_str(s);
    Ok(())
}

fn start_element(
    reader: &NsReader<&[u8]>,
    ns: String,
    e: &BytesStart<'_>,
    limits: &Limits,
) -> Result<Element, XmlError> {
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| XmlError::Malformed {
            position: reader.buffer_position(),
            message: err.to_string(),
        })?;
        if a.key.as_namespace_binding().is_some() {
            continue;
        }
        if attrs.len() >= limits.max_attributes {
            return Err(XmlError::Limit {
                what: "attributes per element",
                limit: limits.max_attributes,
            });
        }
        let (res, local) = reader.resolver().resolve_attribute(a.key);
        let ans = match res {
            ResolveResult::Bound(n) => n.0.to_string(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(p) => return Err(XmlError::UnknownPrefix(p)),
        };
        let value =
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|err| match err {
                    quick_xml::Error::Escape(
                        quick_xml::escape::EscapeError::UnrecognizedEntity(_, name),
                    ) => XmlError::Entity(name),
                    other => XmlError::Malformed {
                        position: reader.buffer_position(),
                        message: other.to_string(),
                    },
                })?;
        attrs.push((ans, local.as_ref().to_string(), value.into_owned()));
    }
    Ok(Element {
        ns,
        name: e.local_name().as_ref().to_string(),
        attrs,
        text: String::new(),
        children: Vec::new(),
    })
}

/// Escapes text for element content.
pub fn escape_text(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaces_and_refs() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="urn:s" xmlns="urn:d"><s:Body a="1 &amp; 2"><x>a&lt;b&#65;<![CDATA[<c>]]></x><y/></s:Body></s:Envelope>"#;
        let root = parse(doc, &Limits::default()).unwrap();
        assert_eq!(
            (root.ns.as_str(), root.name.as_str()),
            ("urn:s", "Envelope")
        );
        let body = root.child_ns("urn:s", "Body").unwrap();
        assert_eq!(body.attr("a"), Some("1 & 2"));
        let x = body.child("x").unwrap();
        assert_eq!(x.ns, "urn:d");
        assert_eq!(x.text, "a<bA<c>");
    }

    #[test]
    fn refuses_doctype_and_entities() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><lolz>&lol2;</lolz>"#;
        assert_eq!(parse(bomb, &Limits::default()), Err(XmlError::Doctype));
        let xxe = br#"<a>&xxe;</a>"#;
        assert!(matches!(
            parse(xxe, &Limits::default()),
            Err(XmlError::Entity(_))
        ));
    }

    #[test]
    fn enforces_limits() {
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(matches!(
            parse(deep.as_bytes(), &Limits::default()),
            Err(XmlError::Limit {
                what: "nesting depth",
                ..
            })
        ));
        let limits = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        assert!(matches!(
            parse(b"<a>0123456789</a>", &limits),
            Err(XmlError::Limit { .. })
        ));
        assert!(matches!(
            parse(b"<a><b></a>", &Limits::default()),
            Err(XmlError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"<p:a/>", &Limits::default()),
            Err(XmlError::UnknownPrefix(_))
        ));
        assert_eq!(parse(b"  ", &Limits::default()), Err(XmlError::Empty));
        assert!(matches!(
            parse(b"<a>x\0</a>", &Limits::default()),
            Err(XmlError::Malformed { position: 4, .. })
        ));
    }
}
