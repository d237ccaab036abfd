//! Reading and checking the header of a CDA R2 based structured medical document.
//!
//! Every failure names the element or attribute at fault as a path from
//! `ClinicalDocument`, so the clinic knows exactly what to fix.

use super::xml::dom::{self, Element, Limits, XmlError};
use crate::model::{NsiCode, Oid, Snils};

/// The HL7 v3 namespace of CDA documents.
pub const NS_HL7: &str = "urn:hl7-org:v3";
/// Reference book of document kinds.
pub const BOOK_DOCUMENT_KINDS: &str = "1.2.643.5.1.13.13.11.1522";
/// OID of SNILS as an identifier root.
pub const ROOT_SNILS: &str = "1.2.643.100.3";

/// The facts of a CDA header the gateway relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdaHeader {
    /// `id/@root`.
    pub id_root: String,
    /// `id/@extension`.
    pub id_extension: String,
    /// `setId/@root` + `@extension`.
    pub set_id: String,
    /// `versionNumber/@value`.
    pub version_number: u32,
    /// The one `templateId/@root`.
    pub template_id: String,
    /// Document kind from reference book 1522 with its version.
    pub kind: NsiCode,
    /// `confidentialityCode/@code`.
    pub confidentiality: String,
    /// Patient SNILS from `recordTarget/patientRole/id[@root=1.2.643.100.3]`.
    pub patient_snils: Snils,
    /// Author SNILS from `author/assignedAuthor/id[@root=1.2.643.100.3]`.
    pub author_snils: Snils,
    /// Custodian organization OID.
    pub custodian: Oid,
}

/// One problem in a document, with the path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CdaError {
    /// Stable machine code.
    pub code: &'static str,
    /// Path from `ClinicalDocument`, e.g. `ClinicalDocument/realmCode/@code`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn err(code: &'static str, path: &str, message: impl Into<String>) -> CdaError {
    CdaError {
        code,
        path: path.to_string(),
        message: message.into(),
    }
}

fn child<'a>(el: &'a Element, name: &str, path: &str) -> Result<&'a Element, CdaError> {
    el.child_ns(NS_HL7, name).ok_or_else(|| {
        err(
            "CDA_REQUIRED_ELEMENT",
            &format!("{path}/{name}"),
            format!("element {name} is required"),
        )
    })
}

fn attr<'a>(el: &'a Element, name: &str, path: &str) -> Result<&'a str, CdaError> {
    el.attr(name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            err(
                "CDA_REQUIRED_ATTRIBUTE",
                &format!("{path}/@{name}"),
                format!("attribute {name} is required"),
            )
        })
}

fn snils_under(el: &Element, path: &str) -> Result<Snils, CdaError> {
    let id = el
        .children_named("id")
        .find(|i| i.ns == NS_HL7 && i.attr("root") == Some(ROOT_SNILS))
        .ok_or_else(|| {
            err(
                "CDA_REQUIRED_ELEMENT",
                &format!("{path}/id[@root='{ROOT_SNILS}']"),
                "an id with the SNILS root is required",
            )
        })?;
    let p = format!("{path}/id[@root='{ROOT_SNILS}']/@extension");
    let raw = id.attr("extension").unwrap_or("");
    Snils::parse(raw).map_err(|e| err("CDA_INVALID_SNILS", &p, e.to_string()))
}

/// Parses a document (bounded, no DTD) and checks its header.
pub fn read_header(xml: &[u8], limits: &Limits) -> Result<CdaHeader, CdaError> {
    let root = dom::parse(xml, limits).map_err(|e| match e {
        XmlError::Doctype | XmlError::Entity(_) => {
            err("CDA_FORBIDDEN_DTD", "ClinicalDocument", e.to_string())
        }
        XmlError::Limit { .. } => err("CDA_TOO_LARGE", "ClinicalDocument", e.to_string()),
        other => err("CDA_MALFORMED_XML", "ClinicalDocument", other.to_string()),
    })?;
    check_header(&root)
}

/// Checks the header of a parsed document.
pub fn check_header(root: &Element) -> Result<CdaHeader, CdaError> {
    let p = "ClinicalDocument";
    if root.name != "ClinicalDocument" || root.ns != NS_HL7 {
        return Err(err(
            "CDA_NOT_CLINICAL_DOCUMENT",
            p,
            format!(
                "root element must be ClinicalDocument in {NS_HL7}, found {} in {:?}",
                root.name, root.ns
            ),
        ));
    }
    let realm = attr(
        child(root, "realmCode", p)?,
        "code",
        &format!("{p}/realmCode"),
    )?;
    if realm != "RU" {
        return Err(err(
            "CDA_INVALID_REALM",
            &format!("{p}/realmCode/@code"),
            format!("must be RU, found {realm:?}"),
        ));
    }
    let type_id = child(root, "typeId", p)?;
    let tp = format!("{p}/typeId");
    if attr(type_id, "root", &tp)? != "2.16.840.1.113883.1.3" {
        return Err(err(
            "CDA_INVALID_TYPE_ID",
            &format!("{tp}/@root"),
            "must be 2.16.840.1.113883.1.3",
        ));
    }
    if attr(type_id, "extension", &tp)? != "POCD_MT000040" {
        return Err(err(
            "CDA_INVALID_TYPE_ID",
            &format!("{tp}/@extension"),
            "must be POCD_MT000040",
        ));
    }
    let templates: Vec<&Element> = root
        .children_named("templateId")
        .filter(|t| t.ns == NS_HL7)
        .collect();
    if templates.len() != 1 {
        return Err(err(
            "CDA_TEMPLATE_ID_COUNT",
            &format!("{p}/templateId"),
            format!(
                "exactly one templateId is required, found {}",
                templates.len()
            ),
        ));
    }
    let template_id = attr(templates[0], "root", &format!("{p}/templateId"))?.to_string();
    let id = child(root, "id", p)?;
    let id_root = attr(id, "root", &format!("{p}/id"))?.to_string();
    Oid::parse(&id_root)
        .map_err(|e| err("CDA_INVALID_OID", &format!("{p}/id/@root"), e.to_string()))?;
    let id_extension = attr(id, "extension", &format!("{p}/id"))?.to_string();
    let set = child(root, "setId", p)?;
    let set_id = format!(
        "{}/{}",
        attr(set, "root", &format!("{p}/setId"))?,
        attr(set, "extension", &format!("{p}/setId"))?
    );
    let vp = format!("{p}/versionNumber");
    let version_number = attr(child(root, "versionNumber", p)?, "value", &vp)?
        .parse::<u32>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            err(
                "CDA_INVALID_VERSION_NUMBER",
                &format!("{vp}/@value"),
                "must be a positive integer",
            )
        })?;
    let code = child(root, "code", p)?;
    let cp = format!("{p}/code");
    let system = attr(code, "codeSystem", &cp)?;
    if system != BOOK_DOCUMENT_KINDS {
        return Err(err(
            "CDA_INVALID_DOCUMENT_KIND",
            &format!("{cp}/@codeSystem"),
            format!(
                "document kind must come from reference book {BOOK_DOCUMENT_KINDS}, found {system}"
            ),
        ));
    }
    let book =
        Oid::parse(BOOK_DOCUMENT_KINDS).map_err(|e| err("CDA_INVALID_OID", &cp, e.to_string()))?;
    let kind = NsiCode::new(
        book,
        attr(code, "codeSystemVersion", &cp)?,
        attr(code, "code", &cp)?,
    )
    .map_err(|e| err("CDA_INVALID_DOCUMENT_KIND", &cp, e.to_string()))?;
    let confidentiality = attr(
        child(root, "confidentialityCode", p)?,
        "code",
        &format!("{p}/confidentialityCode"),
    )?
    .to_string();
    let rp = format!("{p}/recordTarget/patientRole");
    let patient_role = child(
        child(root, "recordTarget", p)?,
        "patientRole",
        &format!("{p}/recordTarget"),
    )?;
    let patient_snils = snils_under(patient_role, &rp)?;
    let ap = format!("{p}/author/assignedAuthor");
    let assigned = child(
        child(root, "author", p)?,
        "assignedAuthor",
        &format!("{p}/author"),
    )?;
    let author_snils = snils_under(assigned, &ap)?;
    let cup = format!("{p}/custodian/assignedCustodian/representedCustodianOrganization");
    let org = child(
        child(
            child(root, "custodian", p)?,
            "assignedCustodian",
            &format!("{p}/custodian"),
        )?,
        "representedCustodianOrganization",
        &format!("{p}/custodian/assignedCustodian"),
    )?;
    let org_id = child(org, "id", &cup)?;
    let custodian =
        Oid::parse_organization(attr(org_id, "root", &format!("{cup}/id"))?).map_err(|e| {
            err(
                "CDA_INVALID_ORGANIZATION",
                &format!("{cup}/id/@root"),
                e.to_string(),
            )
        })?;
    Ok(CdaHeader {
        id_root,
        id_extension,
        set_id,
        version_number,
        template_id,
        kind,
        confidentiality,
        patient_snils,
        author_snils,
        custodian,
    })
}

/// A minimal valid document for tests, the demo and benchmarks (synthetic data only).
pub fn sample_document(
    org_oid: &str,
    patient_snils: &str,
    author_snils: &str,
    number: u64,
    padding: usize,
) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <realmCode code="RU"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_MT000040"/>
  <templateId root="1.2.643.5.1.13.13.14.4.1"/>
  <id root="{org_oid}.100.1.1.51" extension="{number}"/>
  <code code="4" codeSystem="1.2.643.5.1.13.13.11.1522" codeSystemVersion="5.12" codeSystemName="Types of medical documents" displayName="Protocol of instrumental examination"/>
  <title>Protocol of instrumental examination</title>
  <effectiveTime value="20261122101500+0300"/>
  <confidentialityCode code="N" codeSystem="1.2.643.5.1.13.13.99.2.285" codeSystemVersion="1.1"/>
  <languageCode code="ru-RU"/>
  <setId root="{org_oid}.100.1.1.50" extension="{number}"/>
  <versionNumber value="1"/>
  <recordTarget>
    <patientRole>
      <id root="{org_oid}.100.1.1.10" extension="P-{number}"/>
      <id root="1.2.643.100.3" extension="{patient_snils}"/>
      <patient>
        <name><family>Testova</family><given>Synthetic</given></name>
        <administrativeGenderCode code="2" codeSystem="1.2.643.5.1.13.13.11.1040" codeSystemVersion="2.1"/>
        <birthTime value="19800101"/>
      </patient>
    </patientRole>
  </recordTarget>
  <author>
    <time value="20261122101500+0300"/>
    <assignedAuthor>
      <id root="{org_oid}.100.1.1.70" extension="D-1"/>
      <id root="1.2.643.100.3" extension="{author_snils}"/>
      <code code="109" codeSystem="1.2.643.5.1.13.13.11.1002" codeSystemVersion="7.3"/>
      <assignedPerson><name><family>Vrachov</family><given>Synthetic</given></name></assignedPerson>
    </assignedAuthor>
  </author>
  <custodian>
    <assignedCustodian>
      <representedCustodianOrganization>
        <id root="{org_oid}"/>
        <name>Synthetic polyclinic</name>
      </representedCustodianOrganization>
    </assignedCustodian>
  </custodian>
  <legalAuthenticator>
    <time value="20261122101500+0300"/>
    <signatureCode nullFlavor="NA"/>
    <assignedEntity><id root="1.2.643.100.3" extension="{author_snils}"/></assignedEntity>
  </legalAuthenticator>
  <component><structuredBody><component><section><title>Findings</title><text>Synthetic findings. {pad}</text></section></component></structuredBody></component>
</ClinicalDocument>
"#,
        pad = narrative(number, padding)
    )
}

/// About `len` bytes of synthetic findings text: varied words and measurements, so the
/// document compresses like real narrative rather than like a run of one letter.
fn narrative(seed: u64, len: usize) -> String {
    const WORDS: [&str; 48] = [
        "no",
        "signs",
        "of",
        "focal",
        "lesions",
        "the",
        "left",
        "right",
        "lobe",
        "kidney",
        "liver",
        "contour",
        "is",
        "smooth",
        "clear",
        "echogenicity",
        "normal",
        "moderately",
        "increased",
        "decreased",
        "structure",
        "homogeneous",
        "heterogeneous",
        "size",
        "mm",
        "wall",
        "thickness",
        "vessels",
        "not",
        "dilated",
        "free",
        "fluid",
        "absent",
        "present",
        "gallbladder",
        "pancreas",
        "spleen",
        "portal",
        "vein",
        "diameter",
        "within",
        "limits",
        "recommended",
        "follow-up",
        "in",
        "months",
        "cyst",
        "calcification",
    ];
    let mut out = String::with_capacity(len + 16);
    let mut x = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    while out.len() < len {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let r = (x >> 33) as usize;
        if r % 7 == 0 {
            out.push_str(&format!("{}.{} ", r % 97, r % 10));
        } else {
            out.push_str(WORDS[r % WORDS.len()]);
            out.push(if r % 11 == 0 { '.' } else { ' ' });
        }
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORG: &str = "1.2.643.5.1.13.13.12.2.77.7001";
    const PATIENT: &str = "11223344595";
    const AUTHOR: &str = "12345678964";

    fn read(doc: &str) -> Result<CdaHeader, CdaError> {
        read_header(doc.as_bytes(), &Limits::default())
    }

    #[test]
    fn reads_a_valid_header() {
        let h = read(&sample_document(ORG, PATIENT, AUTHOR, 7, 0)).unwrap();
        assert_eq!(h.custodian.as_str(), ORG);
        assert_eq!(h.kind.code, "4");
        assert_eq!(h.kind.version, "5.12");
        assert_eq!(h.patient_snils.digits(), PATIENT);
        assert_eq!(h.version_number, 1);
    }

    #[test]
    fn names_the_field_at_fault() {
        let good = sample_document(ORG, PATIENT, AUTHOR, 7, 0);
        let cases = [
            (good.replace(r#"<realmCode code="RU"/>"#, r#"<realmCode code="US"/>"#), "ClinicalDocument/realmCode/@code"),
            (good.replace("POCD_MT000040", "POCD_X"), "ClinicalDocument/typeId/@extension"),
            (good.replace(r#"<templateId root="1.2.643.5.1.13.13.14.4.1"/>"#, "<templateId root=\"1.2\"/><templateId root=\"1.3\"/>"), "ClinicalDocument/templateId"),
            (good.replace("1.2.643.5.1.13.13.11.1522", "1.2.643.5.1.13.13.11.1523"), "ClinicalDocument/code/@codeSystem"),
            (good.replace(r#"extension="11223344595""#, r#"extension="11223344594""#), "ClinicalDocument/recordTarget/patientRole/id[@root='1.2.643.100.3']/@extension"),
            (good.replace(r#"<versionNumber value="1"/>"#, r#"<versionNumber value="0"/>"#), "ClinicalDocument/versionNumber/@value"),
            (good.replace(&format!(r#"<id root="{ORG}"/>"#), r#"<id root="1.2.643.1"/>"#), "ClinicalDocument/custodian/assignedCustodian/representedCustodianOrganization/id/@root"),
        ];
        for (doc, path) in cases {
            let e = read(&doc).unwrap_err();
            assert_eq!(e.path, path, "{e}");
        }
        let start = good.find("<author>").unwrap();
        let end = good.find("</author>").unwrap() + "</author>".len();
        let no_author = format!("{}{}", &good[..start], &good[end..]);
        assert_eq!(
            read(&no_author).unwrap_err().path,
            "ClinicalDocument/author"
        );
    }

    #[test]
    fn refuses_dtd_and_non_cda() {
        let e = read(r#"<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><ClinicalDocument xmlns="urn:hl7-org:v3">&e;</ClinicalDocument>"#).unwrap_err();
        assert_eq!(e.code, "CDA_FORBIDDEN_DTD");
        assert_eq!(read("<x/>").unwrap_err().code, "CDA_NOT_CLINICAL_DOCUMENT");
    }
}
