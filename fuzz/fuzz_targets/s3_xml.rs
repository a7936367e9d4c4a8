//! The S3 answer scanner (cloud-bridge upload): any bytes from a (hostile) store
//! must give a result or nothing, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for tag in ["UploadId", "ETag", "Code", "Message", "Upload", "Key"] {
        let _ = cloud_bridge::upload::xml::all(&text, tag);
    }
    let _ = cloud_bridge::upload::xml::list_uploads(&text);
    let _ = cloud_bridge::upload::xml::unescape(&text);
    let _ = cloud_bridge::upload::normalize_etag(&text);
    let _ = cloud_bridge::upload::composite_etag(text.split(','));
});
