//! `DictVersion::parse` over arbitrary bytes, seeded with user documents: it never panics, what
//! it refuses has a reason PostgreSQL can store, and a user it accepts can be stored (jsonb takes
//! the document, the id fits a key).

#![no_main]

use dwh_fuzz::model::{DictKind, DictVersion, MAX_DOCUMENT_BYTES};
use dwh_fuzz::{accepted, jsonb, key_sized, storable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(user) = accepted(DictVersion::parse("fuzz", data)) else {
        return;
    };
    assert!(data.len() <= MAX_DOCUMENT_BYTES);
    assert!(!user.id.is_empty() && key_sized(&user.id));
    assert!(user.update_ts.is_none_or(storable));
    assert_eq!(jsonb::check(&user.doc), Ok(()));
    if user.kind == DictKind::User {
        // What the STG merge reads with `->>` is text or absent.
        let doc: serde_json::Value = serde_json::from_str(&user.doc).expect("the document is JSON");
        for field in ["name", "login"] {
            assert!(doc[field].is_string() || doc[field].is_null(), "{field}");
        }
    }
    // The same content parses to the same version.
    let again = DictVersion::parse("fuzz", user.doc.as_bytes()).expect("accepted twice");
    assert_eq!(again.version, user.version);
});
