//! The few fields we read from S3's XML answers (`UploadId`, `ETag`, `Code`,
//! `Message`, the uploads of `ListMultipartUploads`). A bounded scanner, not an
//! XML parser: S3 answers are flat and we only need leaf text. Outside input:
//! fuzzed (`fuzz/fuzz_targets/s3_xml.rs`).

/// Answers larger than this are not scanned.
pub const MAX_XML: usize = 1 << 20;

/// The text of every `<tag>…</tag>` in `xml`, entity-decoded, in order.
pub fn all(xml: &str, tag: &str) -> Vec<String> {
    let mut out = Vec::new();
    if xml.len() > MAX_XML || tag.is_empty() {
        return out;
    }
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(unescape(&after[..j]));
        rest = &after[j + close.len()..];
    }
    out
}

/// The first `<tag>` text.
pub fn first(xml: &str, tag: &str) -> Option<String> {
    all(xml, tag).into_iter().next()
}

/// The `<Upload>` entries of a ListMultipartUploads answer: `(key, upload id)`.
pub fn list_uploads(xml: &str) -> Vec<(String, String)> {
    all(xml, "Upload").iter().filter_map(|u| Some((first(u, "Key")?, first(u, "UploadId")?))).collect()
}

/// XML's five entities and numeric references; anything else is kept verbatim.
pub fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(end) = tail.bytes().take(12).position(|b| b == b';') else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let ent = &tail[1..end];
        let ch = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => {
                let num = if let Some(h) = ent.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = ent.strip_prefix('#') {
                    d.parse().ok()
                } else {
                    None
                };
                num.and_then(char::from_u32)
            }
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_s3_answers() {
        let create = r#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>abc-1</UploadId></InitiateMultipartUploadResult>"#;
        assert_eq!(first(create, "UploadId").as_deref(), Some("abc-1"));
        let complete = "  \n<CompleteMultipartUploadResult><ETag>&quot;9b2c-2&quot;</ETag></CompleteMultipartUploadResult>";
        assert_eq!(first(complete, "ETag").as_deref(), Some("\"9b2c-2\""));
        let err = "<Error><Code>NoSuchUpload</Code><Message>a &lt;b&gt; &#x41;&#66;</Message></Error>";
        assert_eq!(first(err, "Code").as_deref(), Some("NoSuchUpload"));
        assert_eq!(first(err, "Message").as_deref(), Some("a <b> AB"));
        let list = "<ListMultipartUploadsResult><Upload><Key>a</Key><UploadId>1</UploadId></Upload>\
                    <Upload><Key>b</Key><UploadId>2</UploadId></Upload><Upload><Key>c</Key></Upload></ListMultipartUploadsResult>";
        assert_eq!(list_uploads(list), vec![("a".into(), "1".into()), ("b".into(), "2".into())]);
    }

    #[test]
    fn garbage_gives_nothing_and_never_panics() {
        for s in [
            "",
            "<",
            "<ETag>",
            "<ETag></ETag",
            "&",
            "&#xFFFFFFFF;",
            "&#;",
            "<Code>&amp</Code>",
            "é<Code>é</Code>",
        ] {
            let _ = first(s, "ETag");
            let _ = first(s, "Code");
            let _ = list_uploads(s);
        }
        assert_eq!(first("<Code>&amp</Code>", "Code").as_deref(), Some("&amp"));
    }
}
