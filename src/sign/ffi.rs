//! The few libcrypto calls rust-openssl does not wrap. Each `unsafe` block below reads
//! OpenSSL objects that the safe wrappers own and keep alive for the duration of the call.

use std::ffi::{c_char, c_int, c_ulong, c_void, CString};

use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::cms::CmsContentInfo;
use openssl::x509::X509;

/// OpenSSL's NID of the SNILS subject attribute (1.2.643.100.3).
pub const NID_SNILS: c_int = 1006;
/// OpenSSL's NID of the OGRN subject attribute (1.2.643.100.1).
pub const NID_OGRN: c_int = 1005;
const NID_PKCS9_SIGNING_TIME: c_int = 52;

extern "C" {
    fn CONF_modules_load_file(
        filename: *const c_char,
        appname: *const c_char,
        flags: c_ulong,
    ) -> c_int;
    fn CMS_get0_SignerInfos(
        cms: *mut openssl_sys::CMS_ContentInfo,
    ) -> *mut openssl_sys::OPENSSL_STACK;
    fn CMS_get1_certs(cms: *mut openssl_sys::CMS_ContentInfo) -> *mut openssl_sys::OPENSSL_STACK;
    fn CMS_get0_signers(cms: *mut openssl_sys::CMS_ContentInfo) -> *mut openssl_sys::OPENSSL_STACK;
    fn CMS_signed_get_attr_by_NID(si: *const c_void, nid: c_int, lastpos: c_int) -> c_int;
    fn CMS_signed_get_attr(si: *const c_void, loc: c_int) -> *mut c_void;
    fn X509_ATTRIBUTE_get0_type(attr: *mut c_void, idx: c_int) -> *mut openssl_sys::ASN1_TYPE;
}

/// Loads the gost engine through a generated OpenSSL configuration.
pub fn load_gost_engine() {
    let conf = "openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n\
                [engine_section]\ngost = gost_section\n[gost_section]\nengine_id = gost\n\
                default_algorithms = ALL\n";
    let path = std::env::temp_dir().join(format!("medgate-openssl-{}.cnf", std::process::id()));
    if std::fs::write(&path, conf).is_err() {
        return;
    }
    if let Ok(c) = CString::new(path.to_string_lossy().as_bytes()) {
        // SAFETY: a valid NUL-terminated path; NULL appname selects `openssl_conf`.
        let rc = unsafe { CONF_modules_load_file(c.as_ptr(), std::ptr::null(), 0) };
        if rc <= 0 {
            tracing::warn!("GOST engine not loaded (libengine-gost-openssl missing?)");
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Number of SignerInfos, or `None` when the content is not SignedData.
pub fn signer_count(cms: &CmsContentInfo) -> Option<usize> {
    // SAFETY: the stack belongs to `cms` and is only counted.
    unsafe {
        let sk = CMS_get0_SignerInfos(cms.as_ptr());
        if sk.is_null() {
            openssl_sys::ERR_clear_error();
            return None;
        }
        usize::try_from(openssl_sys::OPENSSL_sk_num(sk)).ok()
    }
}

/// Number of certificates carried in the container.
pub fn certificate_count(cms: &CmsContentInfo) -> usize {
    // SAFETY: CMS_get1_certs returns a new stack with new references that we free.
    unsafe {
        let sk = CMS_get1_certs(cms.as_ptr());
        if sk.is_null() {
            return 0;
        }
        let n = usize::try_from(openssl_sys::OPENSSL_sk_num(sk)).unwrap_or(0);
        openssl_sys::OPENSSL_sk_pop_free(sk, Some(free_x509));
        n
    }
}

unsafe extern "C" fn free_x509(p: *mut c_void) {
    openssl_sys::X509_free(p as *mut openssl_sys::X509);
}

/// The signing-time attribute of the first SignerInfo, in epoch seconds.
pub fn signing_time(cms: &CmsContentInfo) -> Option<i64> {
    // SAFETY: all pointers are owned by `cms` and only read; the time is copied out.
    unsafe {
        let sk = CMS_get0_SignerInfos(cms.as_ptr());
        if sk.is_null() || openssl_sys::OPENSSL_sk_num(sk) < 1 {
            return None;
        }
        let si = openssl_sys::OPENSSL_sk_value(sk, 0);
        let loc = CMS_signed_get_attr_by_NID(si, NID_PKCS9_SIGNING_TIME, -1);
        if loc < 0 {
            return None;
        }
        let attr = CMS_signed_get_attr(si, loc);
        if attr.is_null() {
            return None;
        }
        let ty = X509_ATTRIBUTE_get0_type(attr, 0);
        if ty.is_null() {
            return None;
        }
        let kind = (*ty).type_;
        if kind != openssl_sys::V_ASN1_UTCTIME && kind != openssl_sys::V_ASN1_GENERALIZEDTIME {
            return None;
        }
        let time = Asn1TimeRef::from_ptr((*ty).value.ptr as *mut openssl_sys::ASN1_TIME);
        let epoch = Asn1Time::from_unix(0).ok()?;
        let diff = epoch.diff(time).ok()?;
        Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
    }
}

/// The signer certificate (valid after a successful verification).
pub fn first_signer(cms: &CmsContentInfo) -> Option<X509> {
    // SAFETY: CMS_get0_signers returns a new stack whose certificates we up-ref before freeing it.
    unsafe {
        let sk = CMS_get0_signers(cms.as_ptr());
        if sk.is_null() {
            openssl_sys::ERR_clear_error();
            return None;
        }
        let out = if openssl_sys::OPENSSL_sk_num(sk) > 0 {
            let c = openssl_sys::OPENSSL_sk_value(sk, 0) as *mut openssl_sys::X509;
            openssl_sys::X509_up_ref(c);
            Some(X509::from_ptr(c))
        } else {
            None
        };
        openssl_sys::OPENSSL_sk_free(sk);
        out
    }
}
