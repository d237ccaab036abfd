//! The few libcrypto calls rust-openssl does not wrap: loading the `gost` engine and reading
//! a CMS SignedData's SignerInfos, certificates and signing time.
//!
//! Every `unsafe` block lives in this file. The functions take safe rust-openssl objects,
//! only read the OpenSSL structures those objects own (and keep alive for the call), and copy
//! out what they need; references taken here are released here.
// The crate denies unsafe code; this module is the one place allowed to call C.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_uint, c_void};

use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::cms::CmsContentInfo;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKeyRef, Private};
use openssl::x509::{X509Ref, X509};
use openssl_sys::{ENGINE, OPENSSL_STACK};

/// OpenSSL's NID of the SNILS subject attribute (1.2.643.100.3); NIDs never change.
pub const NID_SNILS: c_int = 1006;
/// OpenSSL's NID of the OGRN subject attribute (1.2.643.100.1).
pub const NID_OGRN: c_int = 1005;
/// NID of GOST R 34.10-2012 keys with 256-bit public keys (1.2.643.7.1.1.1.1).
pub const NID_GOST2012_256: c_int = 979;
/// NID of GOST R 34.10-2012 keys with 512-bit public keys (1.2.643.7.1.1.1.2).
pub const NID_GOST2012_512: c_int = 980;
const NID_PKCS9_SIGNING_TIME: c_int = 52;
const NID_PKCS9_CONTENT_TYPE: c_int = 50;
const NID_PKCS9_MESSAGE_DIGEST: c_int = 51;
const NID_PKCS7_DATA: c_int = 21;
const CMS_DETACHED: c_uint = 0x40;
const CMS_BINARY: c_uint = 0x80;
const CMS_NOSMIMECAP: c_uint = 0x200;
const CMS_PARTIAL: c_uint = 0x4000;
const ENGINE_METHOD_ALL: c_uint = 0xFFFF;
const OPENSSL_INIT_ENGINE_DYNAMIC: u64 = 0x0000_0400;

extern "C" {
    fn OPENSSL_init_crypto(opts: u64, settings: *const c_void) -> c_int;
    fn ENGINE_by_id(id: *const std::ffi::c_char) -> *mut ENGINE;
    fn ENGINE_init(e: *mut ENGINE) -> c_int;
    fn ENGINE_finish(e: *mut ENGINE) -> c_int;
    fn ENGINE_free(e: *mut ENGINE) -> c_int;
    fn ENGINE_set_default(e: *mut ENGINE, flags: c_uint) -> c_int;
    fn EVP_PKEY_asn1_find(pe: *mut *mut ENGINE, kind: c_int) -> *const c_void;
    fn CMS_get0_SignerInfos(cms: *mut openssl_sys::CMS_ContentInfo) -> *mut OPENSSL_STACK;
    fn CMS_get1_certs(cms: *mut openssl_sys::CMS_ContentInfo) -> *mut OPENSSL_STACK;
    fn CMS_get0_signers(cms: *mut openssl_sys::CMS_ContentInfo) -> *mut OPENSSL_STACK;
    fn CMS_signed_get_attr_by_NID(si: *const c_void, nid: c_int, lastpos: c_int) -> c_int;
    fn CMS_signed_get_attr(si: *const c_void, loc: c_int) -> *mut openssl_sys::X509_ATTRIBUTE;
    fn CMS_add1_signer(
        cms: *mut openssl_sys::CMS_ContentInfo,
        signer: *mut openssl_sys::X509,
        pk: *mut openssl_sys::EVP_PKEY,
        md: *const openssl_sys::EVP_MD,
        flags: c_uint,
    ) -> *mut c_void;
    fn CMS_signed_add1_attr_by_NID(
        si: *mut c_void,
        nid: c_int,
        kind: c_int,
        bytes: *const c_void,
        len: c_int,
    ) -> c_int;
    fn CMS_SignerInfo_sign(si: *mut c_void) -> c_int;
    fn CMS_set_detached(cms: *mut openssl_sys::CMS_ContentInfo, detached: c_int) -> c_int;
}

/// Loads the `gost` engine (`libengine-gost-openssl`) into this process and makes it the
/// default for everything it implements (GOST keys, signatures, Streebog, GOST ciphers): the
/// in-code equivalent of an OpenSSL configuration with
/// `[gost_section] engine_id = gost, default_algorithms = ALL`.
pub fn load_gost_engine() -> Result<(), String> {
    // SAFETY: plain libcrypto calls with a NUL-terminated id. `ENGINE_by_id` returns a
    // structural reference (freed below); the functional reference from `ENGINE_init` is kept
    // on purpose so the engine stays loaded for the life of the process.
    unsafe {
        OPENSSL_init_crypto(OPENSSL_INIT_ENGINE_DYNAMIC, std::ptr::null());
        let e = ENGINE_by_id(c"gost".as_ptr());
        if e.is_null() {
            return Err(error_text(&ErrorStack::get(), "engine \"gost\" not found"));
        }
        if ENGINE_init(e) != 1 {
            let stack = ErrorStack::get();
            ENGINE_free(e);
            return Err(error_text(&stack, "engine \"gost\" failed to initialize"));
        }
        let set = ENGINE_set_default(e, ENGINE_METHOD_ALL);
        let stack = ErrorStack::get();
        if set != 1 {
            ENGINE_finish(e);
        }
        ENGINE_free(e);
        if set != 1 {
            return Err(error_text(
                &stack,
                "engine \"gost\" could not be made default",
            ));
        }
    }
    Ok(())
}

fn error_text(stack: &ErrorStack, fallback: &str) -> String {
    if stack.errors().is_empty() {
        fallback.to_string()
    } else {
        format!("{fallback}: {stack}")
    }
}

/// True when some engine supplies the ASN.1 method of key type `nid` (GOST keys come only
/// from the engine; the gost *provider* alone offers digests, not keys).
pub fn engine_key_type_available(nid: c_int) -> bool {
    let mut engine: *mut ENGINE = std::ptr::null_mut();
    // SAFETY: `EVP_PKEY_asn1_find` only looks the method up; when it names an engine it hands
    // us a functional reference, released at once.
    unsafe {
        let method = EVP_PKEY_asn1_find(&mut engine, nid);
        if !engine.is_null() {
            ENGINE_finish(engine);
        }
        !method.is_null()
    }
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
    // SAFETY: CMS_get1_certs returns a new stack holding new references; both are freed here.
    unsafe {
        let sk = CMS_get1_certs(cms.as_ptr());
        if sk.is_null() {
            openssl_sys::ERR_clear_error();
            return 0;
        }
        let n = usize::try_from(openssl_sys::OPENSSL_sk_num(sk)).unwrap_or(0);
        openssl_sys::OPENSSL_sk_pop_free(sk, Some(free_x509));
        n
    }
}

unsafe extern "C" fn free_x509(p: *mut c_void) {
    // SAFETY: called by OPENSSL_sk_pop_free on the X509 references CMS_get1_certs took.
    unsafe { openssl_sys::X509_free(p.cast::<openssl_sys::X509>()) }
}

/// The signing-time attribute of the first SignerInfo, in seconds since the Unix epoch.
/// `None` when it is absent or not a UTCTime / GeneralizedTime.
pub fn signing_time(cms: &CmsContentInfo) -> Option<i64> {
    // SAFETY: every pointer is owned by `cms` and only read; the time is copied out. The
    // ASN1_TYPE's union member is read as an ASN1_TIME only after checking its tag.
    unsafe {
        let sk = CMS_get0_SignerInfos(cms.as_ptr());
        if sk.is_null() || openssl_sys::OPENSSL_sk_num(sk) < 1 {
            openssl_sys::ERR_clear_error();
            return None;
        }
        let si = openssl_sys::OPENSSL_sk_value(sk, 0);
        if si.is_null() {
            return None;
        }
        let loc = CMS_signed_get_attr_by_NID(si, NID_PKCS9_SIGNING_TIME, -1);
        if loc < 0 {
            return None;
        }
        let attr = CMS_signed_get_attr(si, loc);
        if attr.is_null() || openssl_sys::X509_ATTRIBUTE_count(attr) != 1 {
            return None;
        }
        let ty = openssl_sys::X509_ATTRIBUTE_get0_type(attr, 0);
        if ty.is_null() {
            return None;
        }
        let kind = (*ty).type_;
        if kind != openssl_sys::V_ASN1_UTCTIME && kind != openssl_sys::V_ASN1_GENERALIZEDTIME {
            return None;
        }
        let raw = (*ty).value.ptr.cast::<openssl_sys::ASN1_TIME>();
        if raw.is_null() {
            return None;
        }
        let time = Asn1TimeRef::from_ptr(raw);
        let epoch = Asn1Time::from_unix(0).ok()?;
        let diff = epoch.diff(time).ok()?;
        Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
    }
}

/// The signer certificate, as `CMS_verify` matched it (call after a successful verification).
pub fn first_signer(cms: &CmsContentInfo) -> Option<X509> {
    // SAFETY: CMS_get0_signers returns a new stack (without new references) that we free; the
    // certificate we keep is up-referenced first.
    unsafe {
        let sk = CMS_get0_signers(cms.as_ptr());
        if sk.is_null() {
            openssl_sys::ERR_clear_error();
            return None;
        }
        let c = if openssl_sys::OPENSSL_sk_num(sk) > 0 {
            openssl_sys::OPENSSL_sk_value(sk, 0).cast::<openssl_sys::X509>()
        } else {
            std::ptr::null_mut()
        };
        let out = if c.is_null() {
            None
        } else {
            openssl_sys::X509_up_ref(c);
            Some(X509::from_ptr(c))
        };
        openssl_sys::OPENSSL_sk_free(sk);
        out
    }
}

/// A detached CMS SignedData over content whose digest (by `md`) the caller already holds:
/// one signer with its certificate and the signed attributes contentType (data),
/// messageDigest and signingTime, exactly what `CMS_sign` would make from the content, but
/// without reading the content again. Two signatures over one document hash it once.
pub fn cms_sign_prehashed(
    cert: &X509Ref,
    key: &PKeyRef<Private>,
    md: MessageDigest,
    digest: &[u8],
) -> Result<CmsContentInfo, ErrorStack> {
    let len = c_int::try_from(digest.len()).map_err(|_| ErrorStack::get())?;
    // SAFETY: CMS_sign with no signer makes a new, empty SignedData that we own (wrapped in
    // CmsContentInfo at once, so it is freed on every path). CMS_add1_signer up-references
    // the certificate and key it keeps; the SignerInfo it returns is owned by `cms`. The
    // attribute calls copy their inputs (the digest bytes, the data OID).
    unsafe {
        let raw = openssl_sys::CMS_sign(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            CMS_DETACHED | CMS_BINARY | CMS_PARTIAL,
        );
        if raw.is_null() {
            return Err(ErrorStack::get());
        }
        let cms = CmsContentInfo::from_ptr(raw);
        if CMS_set_detached(cms.as_ptr(), 1) != 1 {
            return Err(ErrorStack::get());
        }
        let si = CMS_add1_signer(
            cms.as_ptr(),
            cert.as_ptr(),
            key.as_ptr(),
            md.as_ptr(),
            CMS_BINARY | CMS_NOSMIMECAP | CMS_PARTIAL,
        );
        if si.is_null() {
            return Err(ErrorStack::get());
        }
        let data_oid = openssl_sys::OBJ_nid2obj(NID_PKCS7_DATA);
        if data_oid.is_null()
            || CMS_signed_add1_attr_by_NID(
                si,
                NID_PKCS9_CONTENT_TYPE,
                openssl_sys::V_ASN1_OBJECT,
                data_oid as *const c_void,
                -1,
            ) != 1
            || CMS_signed_add1_attr_by_NID(
                si,
                NID_PKCS9_MESSAGE_DIGEST,
                openssl_sys::V_ASN1_OCTET_STRING,
                digest.as_ptr().cast(),
                len,
            ) != 1
            // Adds signingTime (now) and signs the attributes.
            || CMS_SignerInfo_sign(si) != 1
        {
            return Err(ErrorStack::get());
        }
        Ok(cms)
    }
}
