//! Tests of the index client, page parsing, uploads and credentials:
//! compiled only for tests (`#[cfg(test)] mod tests;` in index.rs).

use sha2::Digest;

use super::credentials::pypirc_section;
use super::upload::{hex, multipart, Metadata};
use super::*;

/// Reads one HTTP request (headers and a Content-Length body) from `conn`.
fn read_request(conn: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = conn.read(&mut buf).unwrap();
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return text[..end].to_string();
            }
        }
        if n == 0 {
            return text;
        }
    }
}

#[test]
fn an_upload_whose_answer_was_lost_is_found_on_the_index_byte_for_byte() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let wheel = dir.path().join("acme_web-1.0-py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
    zip.start_file(
        "acme_web-1.0.dist-info/METADATA",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.write_all(b"Metadata-Version: 2.1\nName: acme-web\nVersion: 1.0\n\n")
        .unwrap();
    zip.finish().unwrap();
    let sha = hex(&sha2::Sha256::digest(std::fs::read(&wheel).unwrap()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The index takes the upload and the connection breaks before its
    // answer; the retry is told the file exists; the page lists it.
    let server = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for (i, conn) in listener.incoming().take(4).enumerate() {
            let mut conn = conn.unwrap();
            let request = read_request(&mut conn);
            seen.push(request.lines().next().unwrap_or_default().to_string());
            let answer = match i {
                0 => continue,
                1 => "HTTP/1.1 409 Conflict\r\nContent-Length: 20\r\nConnection: close\r\n\r\nFile already exists.".to_string(),
                _ => {
                    let sha = if i == 2 { sha.clone() } else { "0".repeat(64) };
                    let page = format!("<a href=\"/packages/acme_web-1.0-py3-none-any.whl#sha256={sha}\">acme_web-1.0-py3-none-any.whl</a>");
                    format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}", page.len())
                }
            };
            conn.write_all(answer.as_bytes()).unwrap();
        }
        seen
    });
    let client = IndexClient::new(false, Duration::from_secs(5));
    let err = client
        .upload(&format!("http://127.0.0.1:{port}/"), None, &wheel)
        .unwrap_err();
    assert!(err.downcast_ref::<AlreadyOnIndex>().is_some(), "{err:#}");
    let index = format!("http://127.0.0.1:{port}/simple/");
    assert!(client.lists_identical(&index, "acme-web", &wheel).unwrap());
    // Another file of the same name is not ours.
    assert!(!client.lists_identical(&index, "acme-web", &wheel).unwrap());
    let seen = server.join().unwrap();
    assert_eq!(
        seen,
        [
            "POST / HTTP/1.1",
            "POST / HTTP/1.1",
            "GET /simple/acme-web/ HTTP/1.1",
            "GET /simple/acme-web/ HTTP/1.1"
        ]
    );
}

#[test]
fn html_page_lists_anchor_texts() {
    let page = r#"<!DOCTYPE html><html><body><h1>Links for acme-web</h1>
<a href="/packages/acme_web-1.0.tar.gz#sha256=ab">acme_web-1.0.tar.gz</a><br>
<A HREF="../../packages/acme_web-1.1-py3-none-any.whl#sha256=cd" data-requires-python="&gt;=3.8">acme_web-1.1-py3-none-any.whl</A>
<a href='/p/acme_web-1.2.tar.gz'></a><abbr>x</abbr>
</body></html>"#;
    let files = parse_html_page(page);
    let hashes: Vec<Option<&str>> = files.iter().map(|f| f.sha256.as_deref()).collect();
    assert_eq!(hashes, [Some("ab"), Some("cd"), None]);
    let names: Vec<String> = files.into_iter().map(|f| f.filename).collect();
    assert_eq!(
        names,
        [
            "acme_web-1.0.tar.gz",
            "acme_web-1.1-py3-none-any.whl",
            "acme_web-1.2.tar.gz"
        ]
    );
}

#[test]
fn json_page_lists_files() {
    let page = r#"{"meta":{"api-version":"1.0"},"name":"acme-web","files":[
        {"filename":"acme_web-1.0.tar.gz","url":"x","hashes":{}},
        {"filename":"acme_web-1.0-py3-none-any.whl","url":"y","hashes":{"sha256":"EF01"}}]}"#;
    let files = parse_json_page(page).unwrap();
    assert_eq!(files[0].sha256, None);
    assert_eq!(files[1].sha256.as_deref(), Some("ef01"));
    assert_eq!(files.len(), 2);
    assert_eq!(files[1].filename, "acme_web-1.0-py3-none-any.whl");
    assert!(parse_json_page("{}").is_err());
}

#[test]
fn latest_skips_yanked_files_and_local_versions() {
    let html = r#"<a href="/p/acme_web-1.0.tar.gz">acme_web-1.0.tar.gz</a>
<a href="/p/acme_web-1.2.tar.gz" data-yanked="broke the login">acme_web-1.2.tar.gz</a>
<a href="/p/acme_web-1.3+feature.x.tar.gz">acme_web-1.3+feature.x.tar.gz</a>
<a href="/p/acme_web-1.1-py3-none-any.whl">acme_web-1.1-py3-none-any.whl</a>"#;
    let files = parse_html_page(html);
    assert_eq!(files.iter().filter(|f| f.yanked).count(), 1);
    assert_eq!(latest_of("acme-web", &files).unwrap().to_string(), "1.1");
    let json = r#"{"files":[
        {"filename":"acme_web-2.0.tar.gz","yanked":"security"},
        {"filename":"acme_web-1.9.tar.gz","yanked":false},
        {"filename":"acme_web-1.8.tar.gz","yanked":true},
        {"filename":"acme_web-2.1+hotfix.tar.gz"}]}"#;
    let files = parse_json_page(json).unwrap();
    assert_eq!(latest_of("acme-web", &files).unwrap().to_string(), "1.9");
    assert_eq!(latest_of("acme-web", &[]), None);
}

#[test]
fn url_credentials_become_a_header() {
    let (bare, c) = split_credentials("https://ann:p%40ss@idx.example:8443/simple/x/");
    assert_eq!(bare, "https://idx.example:8443/simple/x/");
    let c = c.unwrap();
    assert_eq!((c.username.as_str(), c.password.as_str()), ("ann", "p@ss"));
    assert!(split_credentials("http://idx/simple/").1.is_none());
}

#[test]
fn passwords_in_urls_are_hidden() {
    assert_eq!(
        redact_url("https://u:s3cret@h/simple/"),
        "https://u:***@h/simple/"
    );
    assert_eq!(redact_url("http://h:8080/"), "http://h:8080/");
    assert_eq!(url_password("https://u:s3cret@h:1/simple/"), Some("s3cret"));
    assert_eq!(url_password("https://u@h/simple/"), None);
    assert_eq!(url_password("http://h:8080/simple/"), None);
}

#[test]
fn urls() {
    assert_eq!(
        project_url("http://i:8080/simple/", "Acme_Web"),
        "http://i:8080/simple/acme-web/"
    );
    assert_eq!(project_url("http://i/simple", "a"), "http://i/simple/a/");
    assert_eq!(
        default_upload_url("http://i:8080/simple/"),
        "http://i:8080/"
    );
    assert_eq!(
        default_upload_url("https://h/pypi/simple"),
        "https://h/pypi/"
    );
}

#[test]
fn metadata_parses_fields_and_body() {
    let text = "Metadata-Version: 2.1\nName: acme-web\nVersion: 1.0\nClassifier: A\nClassifier: B\nLicense: line one\n        |line two\n\nThe long description.\nSecond line.\n";
    let m = Metadata::parse(text);
    assert_eq!(m.get("name"), Some("acme-web"));
    assert_eq!(m.all("Classifier"), ["A", "B"]);
    assert_eq!(m.get("License"), Some("line one\nline two"));
    assert_eq!(m.body, "The long description.\nSecond line.");
}

#[test]
fn multipart_body_holds_fields_and_file() {
    let form = vec![(":action".to_string(), "file_upload".to_string())];
    let body = multipart("B", &form, "a-1.0.tar.gz", b"DATA");
    let text = String::from_utf8(body).unwrap();
    assert!(text.starts_with(
        "--B\r\nContent-Disposition: form-data; name=\":action\"\r\n\r\nfile_upload\r\n"
    ));
    assert!(text.contains("name=\"content\"; filename=\"a-1.0.tar.gz\""));
    assert!(text.ends_with("\r\n\r\nDATA\r\n--B--\r\n"));
}

#[test]
fn digests_match_known_values() {
    assert_eq!(
        hex(&sha2::Sha256::digest(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        hex(&md5::Md5::digest(b"abc")),
        "900150983cd24fb0d6963f7d28e17f72"
    );
    assert_eq!(
        hex(&blake2::Blake2b::<blake2::digest::consts::U32>::digest(
            b"abc"
        )),
        "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"
    );
}

#[test]
fn pypirc_sections_and_credentials_debug() {
    let text = "[distutils]\nindex-servers =\n    internal\n\n[internal]\nrepository: http://i:8080/\nusername = up\npassword = s3cret=x\n";
    let values = pypirc_section(text, "internal");
    assert_eq!(values[0], ("repository".into(), "http://i:8080/".into()));
    assert_eq!(values[2], ("password".into(), "s3cret=x".into()));
    let c = Credentials {
        username: "up".into(),
        password: "s3cret".into(),
    };
    assert!(!format!("{c:?}").contains("s3cret"));
}
