//! XML canonicalization for XMLDSig over quick-xml, both without comments: Exclusive XML
//! Canonicalization 1.0 (`http://www.w3.org/2001/10/xml-exc-c14n#`, with an optional
//! `InclusiveNamespaces PrefixList`) and Canonical XML 1.0
//! (`http://www.w3.org/TR/2001/REC-xml-c14n-20010315`).
//!
//! Canonicalizes a whole document or the subtree of one element (found by an ID attribute, a
//! unique name or a path from the root), optionally leaving out descendant elements (the
//! enveloped-signature transform). A subtree is treated as the XPath node-set of a
//! same-document `#id` reference, as xmlsec does. DTDs are refused, so no entity beyond the
//! five predefined ones and character references can appear; relative namespace URIs are
//! refused, as C14N demands. Tested differentially against libxml2 on `tests/fixtures/c14n`
//! (`make_expected.py` there writes the expected outputs).

use std::borrow::Cow;
use std::collections::BTreeMap;

use quick_xml::events::{BytesPI, BytesStart, Event};
use quick_xml::name::PrefixDeclaration;
use quick_xml::Reader;

use super::dom::{Limits, XmlError};

/// Exclusive XML Canonicalization 1.0 without comments.
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
/// Exclusive XML Canonicalization 1.0 with comments.
pub const EXC_C14N_WITH_COMMENTS: &str = "http://www.w3.org/2001/10/xml-exc-c14n#WithComments";
/// Canonical XML 1.0 (inclusive) without comments.
pub const C14N_10: &str = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315";
/// Canonical XML 1.0 (inclusive) with comments.
pub const C14N_10_WITH_COMMENTS: &str =
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments";

/// The `xml:` namespace, never declared in output.
const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";
/// The namespace of namespace declarations themselves, never bound by a document.
const NS_XMLNS: &str = "http://www.w3.org/2000/xmlns/";

/// A canonicalization algorithm; both leave comments out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// Exclusive XML Canonicalization 1.0: an element renders only the namespaces it visibly
    /// uses (plus [`Selection::inclusive_prefixes`]); `xml:*` attributes are not inherited.
    #[default]
    Exclusive,
    /// Canonical XML 1.0: an element renders every namespace in scope that its nearest
    /// output ancestor did not, and a subtree's top element inherits its ancestors' `xml:*`
    /// attributes.
    Inclusive,
}

impl Method {
    /// The algorithm URI (the form without comments).
    pub fn uri(self) -> &'static str {
        match self {
            Method::Exclusive => EXC_C14N,
            Method::Inclusive => C14N_10,
        }
    }

    /// The method an algorithm URI names; `with_comments` tells whether it is the
    /// `#WithComments` form. `None` for any other URI.
    pub fn from_uri(uri: &str) -> Option<(Method, bool)> {
        match uri {
            EXC_C14N => Some((Method::Exclusive, false)),
            EXC_C14N_WITH_COMMENTS => Some((Method::Exclusive, true)),
            C14N_10 => Some((Method::Inclusive, false)),
            C14N_10_WITH_COMMENTS => Some((Method::Inclusive, true)),
            _ => None,
        }
    }
}

/// What to canonicalize, and how.
#[derive(Debug, Clone, Default)]
pub struct Selection<'a> {
    /// The algorithm.
    pub method: Method,
    /// Canonicalize only the element whose attribute `(namespace, local name)` equals the
    /// value; `None` canonicalizes the whole document.
    pub id: Option<((&'a str, &'a str), &'a str)>,
    /// Canonicalize only the element with this `(namespace, local name)`, which must occur
    /// exactly once.
    pub element: Option<(&'a str, &'a str)>,
    /// Canonicalize only the first element, in document order, reached from the root by this
    /// path of `(namespace, local name)` steps, the root's own name first.
    pub path: Option<&'a [(&'a str, &'a str)]>,
    /// Leave out every element with this `(namespace, local name)` and its content.
    pub exclude: Option<(&'a str, &'a str)>,
    /// Prefixes treated by inclusive rules in exclusive canonicalization (`InclusiveNamespaces
    /// PrefixList`); `#default` names the default namespace. Canonical XML ignores it.
    pub inclusive_prefixes: &'a [&'a str],
}

/// Why canonicalization failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum C14nError {
    /// The input was refused by the parser rules.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The selected element does not exist.
    #[error("no element with {0}")]
    NotFound(String),
    /// The selected ID occurs more than once (a signature-wrapping attempt).
    #[error("more than one element with {0}")]
    Ambiguous(String),
    /// A namespace URI is relative (or no URI at all), which C14N must refuse.
    #[error("relative namespace URI {0:?} cannot be canonicalized")]
    RelativeNamespace(String),
}

/// Namespace bindings as declared: (prefix, "" for the default; URI).
type Bindings = Vec<(String, String)>;

struct Frame {
    /// Namespace bindings declared on this element.
    declared: Bindings,
    /// `xml:*` attributes of this element (local name, value), which an inclusive subtree's
    /// top element inherits.
    xml_attrs: Vec<(String, String)>,
    /// Output bindings in effect after this element (prefix → URI), if it was output.
    rendered: Option<BTreeMap<String, String>>,
    /// This element and its ancestors match the first steps of [`Selection::path`].
    on_path: bool,
}

/// An attribute other than a namespace declaration, its prefix resolved.
struct Attr {
    uri: String,
    local: String,
    qname: String,
    value: String,
}

fn malformed(message: impl std::fmt::Display) -> C14nError {
    XmlError::Malformed {
        position: 0,
        message: message.to_string(),
    }
    .into()
}

/// Canonicalizes `xml` according to `sel`.
pub fn canonicalize(
    xml: &[u8],
    sel: &Selection<'_>,
    limits: &Limits,
) -> Result<Vec<u8>, C14nError> {
    if xml.len() > limits.max_bytes {
        return Err(XmlError::Limit {
            what: "size (bytes)",
            limit: limits.max_bytes,
        }
        .into());
    }
    let text = std::str::from_utf8(xml).map_err(|_| XmlError::Encoding)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut out = Vec::with_capacity(xml.len());
    let mut stack: Vec<Frame> = Vec::new();
    // Depth (stack length) at which output started, and at which an excluded subtree began.
    let subtree = sel.id.is_some() || sel.element.is_some() || sel.path.is_some();
    let mut output_from: Option<usize> = if subtree { None } else { Some(0) };
    let mut excluded_at: Option<usize> = None;
    let mut found = 0usize;
    let mut root_seen = false;
    let mut first_event = true;
    let mut elements = 0usize;
    let err = |reader: &Reader<&[u8]>, e: &dyn std::fmt::Display| -> C14nError {
        XmlError::Malformed {
            position: reader.error_position(),
            message: e.to_string(),
        }
        .into()
    };
    loop {
        let event = reader.read_event().map_err(|e| err(&reader, &e))?;
        let at_start = std::mem::replace(&mut first_event, false);
        let emitting = output_from.is_some() && excluded_at.is_none();
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                elements += 1;
                if elements > limits.max_elements {
                    return Err(XmlError::Limit {
                        what: "element count",
                        limit: limits.max_elements,
                    }
                    .into());
                }
                if stack.len() >= limits.max_depth {
                    return Err(XmlError::Limit {
                        what: "nesting depth",
                        limit: limits.max_depth,
                    }
                    .into());
                }
                root_seen = true;
                let depth = stack.len();
                if !is_qname(e.name().as_ref()) {
                    let name: String = e.name().as_ref().chars().take(32).collect();
                    return Err(err(&reader, &format!("invalid element name {name:?}")));
                }
                let (declared, raw) = read_attributes(e, limits).map_err(|e| match e {
                    C14nError::Xml(XmlError::Malformed { message, .. }) => err(&reader, &message),
                    other => other,
                })?;
                stack.push(Frame {
                    declared,
                    xml_attrs: Vec::new(),
                    rendered: None,
                    on_path: false,
                });
                let (ns, local) = element_name(&stack, e)?;
                let attrs = resolve_attributes(&stack, raw)?;
                let top = stack.len() - 1;
                stack[top].xml_attrs = attrs
                    .iter()
                    .filter(|a| a.uri == NS_XML)
                    .map(|a| (a.local.clone(), a.value.clone()))
                    .collect();
                if let Some(((id_ns, id_local), id_value)) = sel.id {
                    let matches = attrs
                        .iter()
                        .any(|a| a.uri == id_ns && a.local == id_local && a.value == id_value);
                    if matches {
                        found += 1;
                        if found > 1 {
                            return Err(C14nError::Ambiguous(format!("{id_local}={id_value}")));
                        }
                        output_from.get_or_insert(depth);
                    }
                }
                if sel
                    .element
                    .is_some_and(|x| x == (ns.as_str(), local.as_str()))
                {
                    found += 1;
                    if found > 1 {
                        return Err(C14nError::Ambiguous(format!("element {local}")));
                    }
                    output_from.get_or_insert(depth);
                }
                if let Some(path) = sel.path {
                    let parent_on_path = depth == 0 || stack[depth - 1].on_path;
                    let on_path = parent_on_path
                        && path
                            .get(depth)
                            .is_some_and(|step| *step == (ns.as_str(), local.as_str()));
                    stack[top].on_path = on_path;
                    if on_path && depth + 1 == path.len() && found == 0 {
                        found = 1;
                        output_from = Some(depth);
                    }
                }
                let emitting = output_from.is_some() && excluded_at.is_none();
                if emitting
                    && sel
                        .exclude
                        .is_some_and(|x| x == (ns.as_str(), local.as_str()))
                {
                    excluded_at = Some(depth);
                }
                if output_from.is_some() && excluded_at.is_none() {
                    let apex = output_from == Some(depth);
                    write_start(&mut out, &mut stack, e, attrs, sel, apex);
                }
                if empty {
                    close(
                        &mut out,
                        &mut stack,
                        &mut output_from,
                        &mut excluded_at,
                        e.name().as_ref(),
                        subtree,
                    );
                }
            }
            Event::End(ref e) => {
                close(
                    &mut out,
                    &mut stack,
                    &mut output_from,
                    &mut excluded_at,
                    e.name().as_ref(),
                    subtree,
                );
            }
            Event::Text(t) => {
                if emitting && !stack.is_empty() {
                    escape_text(&mut out, &t.xml10_content());
                }
            }
            Event::CData(t) => {
                // The parser normalizes line ends inside CDATA as everywhere else.
                if emitting && !stack.is_empty() {
                    escape_text(&mut out, &t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|e| err(&reader, &e))? {
                    Some(c) => c.to_string(),
                    None => match &*r.into_inner() {
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "amp" => "&".into(),
                        "apos" => "'".into(),
                        "quot" => "\"".into(),
                        other => {
                            return Err(XmlError::Entity(other.chars().take(32).collect()).into())
                        }
                    },
                };
                if emitting && !stack.is_empty() {
                    escape_text(&mut out, &resolved);
                }
            }
            Event::PI(pi) => {
                check_pi_target(pi.target()).map_err(|m| err(&reader, &m))?;
                // Only whole-document output keeps PIs outside the root, with line breaks.
                if emitting {
                    let outside = stack.is_empty();
                    if outside && root_seen {
                        out.push(b'\n');
                    }
                    write_pi(&mut out, &pi);
                    if outside && !root_seen {
                        out.push(b'\n');
                    }
                }
            }
            Event::Decl(_) if !at_start => {
                return Err(err(
                    &reader,
                    &"XML declaration allowed only at the start of the document",
                ))
            }
            Event::DocType(_) => return Err(XmlError::Doctype.into()),
            Event::Comment(_) | Event::Decl(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(((_, local), value)) = sel.id {
        if found == 0 {
            return Err(C14nError::NotFound(format!("{local}={value}")));
        }
    }
    if let Some((_, local)) = sel.element {
        if found == 0 {
            return Err(C14nError::NotFound(format!("element {local}")));
        }
    }
    if let Some(path) = sel.path {
        if found == 0 {
            let names: Vec<&str> = path.iter().map(|(_, local)| *local).collect();
            return Err(C14nError::NotFound(format!("path {}", names.join("/"))));
        }
    }
    Ok(out)
}

/// An attribute as written, before its prefix is resolved.
struct RawAttr {
    qname: String,
    value: String,
}

/// Splits the attributes of a start tag into namespace declarations (checked: absolute
/// URIs, no rebinding of `xml` or `xmlns`) and other attributes (values normalized).
fn read_attributes(
    e: &BytesStart<'_>,
    limits: &Limits,
) -> Result<(Bindings, Vec<RawAttr>), C14nError> {
    let mut declared = Vec::new();
    let mut raw = Vec::new();
    for a in e.attributes().with_checks(true) {
        let a = a.map_err(malformed)?;
        if !is_qname(a.key.as_ref()) {
            let name: String = a.key.as_ref().chars().take(32).collect();
            return Err(malformed(format!("invalid attribute name {name:?}")));
        }
        let value =
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|err| match err {
                    quick_xml::Error::Escape(
                        quick_xml::escape::EscapeError::UnrecognizedEntity(_, n),
                    ) => C14nError::Xml(XmlError::Entity(n)),
                    other => malformed(other),
                })?
                .into_owned();
        match a.key.as_namespace_binding() {
            Some(binding) => {
                let prefix = match binding {
                    PrefixDeclaration::Default => String::new(),
                    PrefixDeclaration::Named(p) => p.to_string(),
                };
                check_declaration(&prefix, &value)?;
                declared.push((prefix, value));
            }
            None => {
                if raw.len() >= limits.max_attributes {
                    return Err(XmlError::Limit {
                        what: "attributes per element",
                        limit: limits.max_attributes,
                    }
                    .into());
                }
                raw.push(RawAttr {
                    qname: a.key.as_ref().to_string(),
                    value,
                });
            }
        }
    }
    Ok((declared, raw))
}

/// Refuses what the Namespaces in XML rules forbid and the relative URIs C14N forbids.
fn check_declaration(prefix: &str, uri: &str) -> Result<(), C14nError> {
    let forbidden = match (prefix, uri) {
        ("xml", NS_XML) => None,
        ("xml", _) => Some("the xml prefix bound to another namespace"),
        ("xmlns", _) => Some("the xmlns prefix declared"),
        (_, NS_XML) => Some("the xml namespace bound to another prefix"),
        (_, NS_XMLNS) => Some("the xmlns namespace bound to a prefix"),
        (p, "") if !p.is_empty() => Some("a prefix bound to the empty namespace"),
        _ => None,
    };
    if let Some(what) = forbidden {
        return Err(malformed(format!("{what} (xmlns:{prefix}=\"{uri}\")")));
    }
    if !uri.is_empty() && !is_absolute_uri(uri) {
        return Err(C14nError::RelativeNamespace(
            uri.chars().take(256).collect(),
        ));
    }
    Ok(())
}

/// True when `uri` is an absolute URI (optionally with a fragment) that RFC 3986 accepts,
/// the namespace URIs libxml2's C14N accepts.
fn is_absolute_uri(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    let mut scheme_bytes = scheme.bytes();
    if !scheme_bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        || !scheme_bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return false;
    }
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    let (hier, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    let path = match hier.strip_prefix("//") {
        Some(after) => {
            let end = after.find('/').unwrap_or(after.len());
            if !is_authority(&after[..end]) {
                return false;
            }
            &after[end..]
        }
        None => hier,
    };
    uri_chars(path, b":@/")
        && query.is_none_or(|q| uri_chars(q, b":@/?"))
        && fragment.is_none_or(|f| uri_chars(f, b":@/?"))
}

/// `[userinfo "@"] host [":" port]` of RFC 3986 (libxml2 wants digits after a colon).
fn is_authority(authority: &str) -> bool {
    let (userinfo, host_port) = match authority.split_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if userinfo.is_some_and(|u| !uri_chars(u, b":")) {
        return false;
    }
    let (host_ok, port) = if let Some(literal) = host_port.strip_prefix('[') {
        match literal.split_once(']') {
            Some((ip, port)) => (
                !ip.is_empty()
                    && ip
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.')),
                port,
            ),
            None => return false,
        }
    } else {
        let end = host_port.find(':').unwrap_or(host_port.len());
        (uri_chars(&host_port[..end], b""), &host_port[end..])
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// True when `s` holds only unreserved characters, sub-delimiters, `extra` and well-formed
/// percent escapes.
fn uri_chars(s: &str, extra: &[u8]) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
            continue;
        }
        let allowed =
            b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) || extra.contains(&b);
        if !allowed {
            return false;
        }
        i += 1;
    }
    true
}

/// Refuses PI targets XML forbids: empty, `xml` in any case, or with a colon.
fn check_pi_target(target: &str) -> Result<(), String> {
    if target.is_empty() || target.eq_ignore_ascii_case("xml") || target.contains(':') {
        return Err(format!("invalid processing instruction target {target:?}"));
    }
    Ok(())
}

/// `<?target data?>` as C14N writes it: one space before non-empty data (the whitespace
/// after the target is not part of the data), line ends normalized, nothing escaped.
fn write_pi(out: &mut Vec<u8>, pi: &BytesPI<'_>) {
    out.extend_from_slice(b"<?");
    out.extend_from_slice(pi.target().as_bytes());
    let data = pi.content().trim_start_matches([' ', '\t', '\r', '\n']);
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(normalize_eols(data).as_bytes());
    }
    out.extend_from_slice(b"?>");
}

/// XML 1.0 line-end normalization: CR LF and lone CR become LF.
fn normalize_eols(s: &str) -> Cow<'_, str> {
    if s.contains('\r') {
        Cow::Owned(s.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(s)
    }
}

/// A `QName` of Namespaces in XML 1.0: an `NCName`, or two joined by one colon. quick-xml
/// does not check names, and an element named `a/` would be written as `<a/></a/>`.
fn is_qname(name: &str) -> bool {
    match name.split_once(':') {
        Some((prefix, local)) => is_ncname(prefix) && is_ncname(local),
        None => is_ncname(name),
    }
}

/// A `Name` of XML 1.0 (fifth edition) without colons.
fn is_ncname(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(is_name_start_char) && chars.all(is_name_char)
}

/// `NameStartChar` of XML 1.0 (fifth edition), colon left out.
fn is_name_start_char(c: char) -> bool {
    matches!(c, 'A'..='Z' | '_' | 'a'..='z')
        || matches!(c, '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}')
        || matches!(c, '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}')
        || matches!(c, '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}')
        || matches!(c, '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}')
        || matches!(c, '\u{10000}'..='\u{EFFFF}')
}

/// `NameChar` of XML 1.0 (fifth edition), colon left out.
fn is_name_char(c: char) -> bool {
    matches!(c, '-' | '.' | '0'..='9' | '\u{B7}')
        || matches!(c, '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
        || is_name_start_char(c)
}

/// The URI bound to `prefix` in the document (all ancestors), `None` when unbound.
fn in_scope(stack: &[Frame], prefix: &str) -> Option<String> {
    if prefix == "xml" {
        return Some(NS_XML.into());
    }
    for f in stack.iter().rev() {
        if let Some((_, uri)) = f.declared.iter().rev().find(|(p, _)| p == prefix) {
            return if uri.is_empty() && !prefix.is_empty() {
                None
            } else {
                Some(uri.clone())
            };
        }
    }
    None
}

/// Every namespace in scope (prefix → URI, "" for the default, an empty URI when the
/// default is undeclared), without `xml`.
fn all_in_scope(stack: &[Frame]) -> BTreeMap<String, String> {
    let mut scope = BTreeMap::new();
    for f in stack {
        for (p, uri) in &f.declared {
            scope.insert(p.clone(), uri.clone());
        }
    }
    scope.remove("xml");
    scope
}

fn split(qname: &str) -> (String, String) {
    match qname.split_once(':') {
        Some((p, l)) => (p.to_string(), l.to_string()),
        None => (String::new(), qname.to_string()),
    }
}

fn element_name(stack: &[Frame], e: &BytesStart<'_>) -> Result<(String, String), C14nError> {
    let (prefix, local) = split(e.name().as_ref());
    let ns = match in_scope(stack, &prefix) {
        Some(u) => u,
        None if prefix.is_empty() => String::new(),
        None => return Err(XmlError::UnknownPrefix(prefix).into()),
    };
    Ok((ns, local))
}

/// Resolves attribute prefixes; two attributes with one expanded name are refused.
fn resolve_attributes(stack: &[Frame], raw: Vec<RawAttr>) -> Result<Vec<Attr>, C14nError> {
    let mut attrs: Vec<Attr> = Vec::with_capacity(raw.len());
    for a in raw {
        let (prefix, local) = split(&a.qname);
        let uri = if prefix.is_empty() {
            String::new()
        } else {
            in_scope(stack, &prefix).ok_or(XmlError::UnknownPrefix(prefix))?
        };
        if attrs.iter().any(|b| b.uri == uri && b.local == local) {
            return Err(malformed(format!("attribute {{{uri}}}{local} given twice")));
        }
        attrs.push(Attr {
            uri,
            local,
            qname: a.qname,
            value: a.value,
        });
    }
    Ok(attrs)
}

/// The output bindings in effect for the element on top of the stack (nearest output ancestor).
fn output_context(stack: &[Frame]) -> BTreeMap<String, String> {
    stack[..stack.len().saturating_sub(1)]
        .iter()
        .rev()
        .find_map(|f| f.rendered.clone())
        .unwrap_or_default()
}

/// The namespace declarations the element on top of the stack renders, and the output
/// bindings in effect after it.
fn namespace_axis(
    stack: &[Frame],
    prefix: &str,
    attrs: &[Attr],
    sel: &Selection<'_>,
) -> (Vec<(String, String)>, BTreeMap<String, String>) {
    let mut rendered = output_context(stack);
    let mut decls: Vec<(String, String)> = Vec::new();
    match sel.method {
        Method::Exclusive => {
            // Prefixes visibly utilized (the element's own and its attributes'), and the
            // inclusive ones in scope.
            let mut utilized: Vec<String> = vec![prefix.to_string()];
            for a in attrs {
                if let Some((p, _)) = a.qname.split_once(':') {
                    utilized.push(p.to_string());
                }
            }
            for p in sel.inclusive_prefixes {
                let p = if *p == "#default" { "" } else { p };
                if p.is_empty() || in_scope(stack, p).is_some() {
                    utilized.push(p.to_string());
                }
            }
            utilized.sort();
            utilized.dedup();
            for p in utilized {
                if p == "xml" {
                    continue;
                }
                let uri = in_scope(stack, &p).unwrap_or_default();
                if rendered.get(&p).map_or("", String::as_str) != uri {
                    decls.push((p.clone(), uri.clone()));
                    rendered.insert(p, uri);
                }
            }
        }
        Method::Inclusive => {
            let mut scope = all_in_scope(stack);
            // An absent or undeclared default namespace is compared as "".
            scope.entry(String::new()).or_default();
            for (p, uri) in &scope {
                if rendered.get(p).map_or("", String::as_str) != uri {
                    decls.push((p.clone(), uri.clone()));
                }
            }
            rendered = scope;
        }
    }
    (decls, rendered)
}

fn write_start(
    out: &mut Vec<u8>,
    stack: &mut [Frame],
    e: &BytesStart<'_>,
    mut attrs: Vec<Attr>,
    sel: &Selection<'_>,
    apex: bool,
) {
    let (prefix, _) = split(e.name().as_ref());
    let (decls, rendered) = namespace_axis(stack, &prefix, &attrs, sel);
    if apex && sel.method == Method::Inclusive {
        // The top of an inclusive subtree inherits the nearest ancestor's value of every
        // xml:* attribute it does not carry itself.
        let ancestors = &stack[..stack.len().saturating_sub(1)];
        for f in ancestors.iter().rev() {
            for (local, value) in &f.xml_attrs {
                if !attrs.iter().any(|a| a.uri == NS_XML && a.local == *local) {
                    attrs.push(Attr {
                        uri: NS_XML.into(),
                        local: local.clone(),
                        qname: format!("xml:{local}"),
                        value: value.clone(),
                    });
                }
            }
        }
    }
    out.push(b'<');
    out.extend_from_slice(e.name().as_ref().as_bytes());
    for (p, uri) in &decls {
        if p.is_empty() {
            out.extend_from_slice(b" xmlns=\"");
        } else {
            out.extend_from_slice(b" xmlns:");
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(b"=\"");
        }
        escape_attr(out, uri);
        out.push(b'"');
    }
    attrs.sort_by(|a, b| (&a.uri, &a.local).cmp(&(&b.uri, &b.local)));
    for a in &attrs {
        out.push(b' ');
        out.extend_from_slice(a.qname.as_bytes());
        out.extend_from_slice(b"=\"");
        escape_attr(out, &a.value);
        out.push(b'"');
    }
    out.push(b'>');
    if let Some(top) = stack.last_mut() {
        top.rendered = Some(rendered);
    }
}

fn close(
    out: &mut Vec<u8>,
    stack: &mut Vec<Frame>,
    output_from: &mut Option<usize>,
    excluded_at: &mut Option<usize>,
    qname: &str,
    subtree: bool,
) {
    let depth = stack.len().saturating_sub(1);
    let was_output = stack.last().is_some_and(|f| f.rendered.is_some());
    if was_output {
        out.extend_from_slice(b"</");
        out.extend_from_slice(qname.as_bytes());
        out.push(b'>');
    }
    stack.pop();
    if *excluded_at == Some(depth) {
        *excluded_at = None;
    }
    if subtree && *output_from == Some(depth) {
        // The selected subtree is complete; nothing after it belongs to the output.
        *output_from = None;
        *excluded_at = Some(usize::MAX);
    }
}

fn escape_text(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            // Only a character reference can still carry a CR here.
            b'\r' => out.extend_from_slice(b"&#xD;"),
            _ => out.push(b),
        }
    }
}

fn escape_attr(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            b'\t' => out.extend_from_slice(b"&#x9;"),
            b'\n' => out.extend_from_slice(b"&#xA;"),
            b'\r' => out.extend_from_slice(b"&#xD;"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c14n(xml: &str) -> String {
        String::from_utf8(
            canonicalize(xml.as_bytes(), &Selection::default(), &Limits::default()).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn basics() {
        assert_eq!(
            c14n(r#"<?xml version="1.0"?><a b="2" a="1"><c/></a>"#),
            r#"<a a="1" b="2"><c></c></a>"#
        );
        assert_eq!(
            c14n("<a>x&#13;&amp;&lt;y\r\nz</a>"),
            "<a>x&#xD;&amp;&lt;y\nz</a>"
        );
        assert_eq!(c14n("<a><![CDATA[<&>]]></a>"), "<a>&lt;&amp;&gt;</a>");
        assert_eq!(c14n("<a><![CDATA[x\r\ny\r]]></a>"), "<a>x\ny\n</a>");
        assert_eq!(c14n("<a><!--c--></a>"), "<a></a>");
        assert_eq!(
            c14n("<a><?t   ?><?t \r\n d\re ?></a>"),
            "<a><?t?><?t d\ne ?></a>"
        );
    }

    #[test]
    fn subtree_with_inherited_namespace_and_exclusion() {
        let doc = r#"<s:E xmlns:s="urn:s" xmlns:u="urn:u" xmlns:unused="urn:x"><s:H><sig:S xmlns:sig="urn:sig"/></s:H><s:B u:Id="b1"><p>t</p><sig:S xmlns:sig="urn:sig"><sig:V/></sig:S></s:B></s:E>"#;
        let sel = Selection {
            id: Some((("urn:u", "Id"), "b1")),
            exclude: Some(("urn:sig", "S")),
            ..Selection::default()
        };
        let out = canonicalize(doc.as_bytes(), &sel, &Limits::default()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"<s:B xmlns:s="urn:s" xmlns:u="urn:u" u:Id="b1"><p>t</p></s:B>"#
        );
        let inclusive = Selection {
            method: Method::Inclusive,
            ..sel.clone()
        };
        let out = canonicalize(doc.as_bytes(), &inclusive, &Limits::default()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"<s:B xmlns:s="urn:s" xmlns:u="urn:u" xmlns:unused="urn:x" u:Id="b1"><p>t</p></s:B>"#
        );
        let missing = Selection {
            id: Some((("urn:u", "Id"), "nope")),
            ..Selection::default()
        };
        assert!(matches!(
            canonicalize(doc.as_bytes(), &missing, &Limits::default()),
            Err(C14nError::NotFound(_))
        ));
        let twice = doc.replace("<p>t</p>", r#"<p u:Id="b1">t</p>"#);
        assert!(matches!(
            canonicalize(twice.as_bytes(), &sel, &Limits::default()),
            Err(C14nError::Ambiguous(_))
        ));
    }

    #[test]
    fn path_selects_the_first_match_in_document_order() {
        let doc = r#"<r xmlns="urn:r"><a><b n="1"/></a><a><b n="2"/><b n="3"/></a><x><a><b n="4"/></a></x></r>"#;
        let path = [("urn:r", "r"), ("urn:r", "a"), ("urn:r", "b")];
        let sel = Selection {
            path: Some(&path),
            ..Selection::default()
        };
        let out = canonicalize(doc.as_bytes(), &sel, &Limits::default()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"<b xmlns="urn:r" n="1"></b>"#
        );
        let nested = [("urn:r", "r"), ("urn:r", "x"), ("urn:r", "b")];
        let sel = Selection {
            path: Some(&nested),
            ..Selection::default()
        };
        assert!(matches!(
            canonicalize(doc.as_bytes(), &sel, &Limits::default()),
            Err(C14nError::NotFound(_))
        ));
    }

    #[test]
    fn method_uris() {
        for m in [Method::Exclusive, Method::Inclusive] {
            assert_eq!(Method::from_uri(m.uri()), Some((m, false)));
        }
        assert_eq!(
            Method::from_uri(C14N_10_WITH_COMMENTS),
            Some((Method::Inclusive, true))
        );
        assert_eq!(
            Method::from_uri("http://www.w3.org/2006/12/xml-c14n11"),
            None
        );
    }

    /// Namespace URIs with libxml2's verdict (`namespace-uris.txt`, from `make_expected.py`).
    #[test]
    fn namespace_uris_as_libxml2_judges_them() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/c14n/namespace-uris.txt"
        );
        let table = std::fs::read_to_string(path).unwrap();
        let mut checked = 0;
        for line in table.lines().filter(|l| !l.starts_with('#')) {
            let (verdict, uri) = line.split_once('\t').unwrap();
            assert_eq!(
                is_absolute_uri(uri),
                verdict == "ok",
                "{uri:?}: libxml2 says {verdict}"
            );
            checked += 1;
        }
        assert!(checked >= 40, "only {checked} URIs");
        let doc = r#"<a xmlns:p="p/q"/>"#;
        assert_eq!(
            canonicalize(doc.as_bytes(), &Selection::default(), &Limits::default()),
            Err(C14nError::RelativeNamespace("p/q".into()))
        );
    }

    /// A fixture's settings, from its optional `NAME.xml.args` (see `make_expected.py`).
    #[derive(Default)]
    struct Args {
        method: Method,
        prefixes: Vec<String>,
        id: Option<(String, String, String)>,
        exclude: Option<(String, String)>,
    }

    /// `{namespace}local` or `local`.
    fn expanded_name(s: &str) -> (String, String) {
        match s.strip_prefix('{').and_then(|r| r.split_once('}')) {
            Some((ns, local)) => (ns.to_string(), local.to_string()),
            None => (String::new(), s.to_string()),
        }
    }

    fn read_args(path: &std::path::Path) -> Args {
        let mut args = Args::default();
        let Ok(text) = std::fs::read_to_string(path) else {
            return args;
        };
        for line in text.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "method" => {
                    args.method = match value {
                        "inclusive" => Method::Inclusive,
                        "exclusive" => Method::Exclusive,
                        other => panic!("{path:?}: method {other}"),
                    }
                }
                "prefixes" => args.prefixes = value.split_whitespace().map(String::from).collect(),
                "id" => {
                    let (name, id) = value.rsplit_once('=').unwrap();
                    let (ns, local) = expanded_name(name);
                    args.id = Some((ns, local, id.to_string()));
                }
                "exclude" => args.exclude = Some(expanded_name(value)),
                other => panic!("{path:?}: unknown setting {other}"),
            }
        }
        args
    }

    fn refusal_class(e: &C14nError) -> &'static str {
        match e {
            C14nError::RelativeNamespace(_) => "relative-namespace",
            C14nError::Xml(_) => "malformed",
            C14nError::NotFound(_) => "not-found",
            C14nError::Ambiguous(_) => "ambiguous",
        }
    }

    /// Every `NAME.xml` against libxml2's output (`NAME.xml.c14n`) or refusal
    /// (`NAME.xml.refused`), with the settings of `NAME.xml.args`. `MEDGATE_C14N_FIXTURES`
    /// names another folder, such as random cases from `make_expected.py --random`.
    #[test]
    fn refuses_names_that_are_not_qnames() {
        // Found by the c14n fuzz target: the element name `a/` came out as `<a/></a/>`, which
        // is not even well-formed.
        for doc in [
            "<a//>",
            "<\0//>",
            "<a/b></a/b>",
            "<a:b:c xmlns:a=\"urn:a\"/>",
            "<1a/>",
            "<a b\"c=\"1\"/>",
            "<a xmlns:=\"urn:a\"/>",
            "<a :b=\"1\"/>",
        ] {
            assert!(
                matches!(
                    canonicalize(doc.as_bytes(), &Selection::default(), &Limits::default()),
                    Err(C14nError::Xml(XmlError::Malformed { .. }))
                ),
                "{doc:?}"
            );
        }
        assert_eq!(
            c14n("<\u{436}:x-1.\u{B7} xmlns:\u{436}=\"urn:z\" _a=\"1\"/>"),
            "<\u{436}:x-1.\u{B7} xmlns:\u{436}=\"urn:z\" _a=\"1\"></\u{436}:x-1.\u{B7}>"
        );
    }

    #[test]
    fn differential_against_libxml2_fixtures() {
        let other = std::env::var("MEDGATE_C14N_FIXTURES").ok();
        let dir = other.clone().unwrap_or_else(|| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/c14n").to_string()
        });
        let mut checked = 0;
        let mut failures = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("xml") {
                continue;
            }
            let input = std::fs::read(&path).unwrap();
            if path.to_string_lossy().contains("bom") {
                assert!(
                    input.starts_with(b"\xEF\xBB\xBF"),
                    "{path:?} names a BOM it lacks"
                );
            }
            let args = read_args(&path.with_extension("xml.args"));
            let prefixes: Vec<&str> = args.prefixes.iter().map(String::as_str).collect();
            let sel = Selection {
                method: args.method,
                id: args
                    .id
                    .as_ref()
                    .map(|(ns, local, v)| ((ns.as_str(), local.as_str()), v.as_str())),
                exclude: args
                    .exclude
                    .as_ref()
                    .map(|(ns, local)| (ns.as_str(), local.as_str())),
                inclusive_prefixes: &prefixes,
                ..Selection::default()
            };
            let got = canonicalize(&input, &sel, &Limits::default());
            let expected = std::fs::read(path.with_extension("xml.c14n"));
            let refused = std::fs::read_to_string(path.with_extension("xml.refused"));
            let failure = match (&got, expected, refused) {
                (Ok(got), Ok(expected), _) if *got == expected => None,
                (Ok(got), Ok(expected), _) => Some(format!(
                    "got      {}\n  expected {}",
                    String::from_utf8_lossy(got),
                    String::from_utf8_lossy(&expected)
                )),
                (Err(e), _, Ok(class)) if refusal_class(e) == class.trim() => None,
                (Err(e), Ok(_), _) => Some(format!("refused: {e}")),
                (got, _, Ok(class)) => {
                    Some(format!("expected a {} refusal, got {got:?}", class.trim()))
                }
                (_, Err(_), Err(_)) => Some("neither .c14n nor .refused".into()),
            };
            if let Some(f) = failure {
                failures.push(format!("{}:\n  {f}", path.display()));
            }
            if args.method == Method::Inclusive {
                seen.insert("inclusive");
            }
            if !args.prefixes.is_empty() {
                seen.insert("prefix list");
            }
            if args.id.is_some() {
                seen.insert("subtree");
            }
            if path.with_extension("xml.refused").exists() {
                seen.insert("refusal");
            }
            checked += 1;
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(checked >= 80, "only {checked} fixtures");
        if other.is_none() {
            assert_eq!(seen.len(), 4, "fixture classes seen: {seen:?}");
        }
    }
}
