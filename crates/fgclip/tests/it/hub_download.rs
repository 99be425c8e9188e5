//! `hub::resolve("owner/name")` online, against a tiny local HTTP server that speaks the part of the Hub protocol
//! hf-hub uses (`GET {endpoint}/{repo}/resolve/{rev}/{file}` with `Range`, answering `etag`, `x-repo-commit`,
//! `content-range`). Checks: downloads land in the HF cache under `HF_HOME`, a sharded index pulls its shards,
//! optional files answered with 404 are absent (not errors), and HTTP / connection failures become `Error::Hub`.
//!
//! Environment variables are process-global: this binary holds its own, and every test takes `ENV_LOCK`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use fgclip::hub;

static ENV_LOCK: Mutex<()> = Mutex::new(());

const COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";

struct Server {
    endpoint: String,
    /// Paths requested, in order.
    log: Arc<Mutex<Vec<String>>>,
}

/// Serve `files` of repo `org/name` at revision `main`; anything else is 404, or `status` for every request when
/// given.
fn serve(files: HashMap<String, Vec<u8>>, status: Option<u16>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut range_start = 0usize;
            let mut range_end: Option<usize> = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (a, b) = v.trim().split_once('-').unwrap();
                    range_start = a.parse().unwrap();
                    range_end = b.parse().ok();
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            log2.lock().unwrap().push(path.clone());
            let file = path.strip_prefix("/org/name/resolve/main/").and_then(|f| files.get(f).map(|b| (f, b)));
            let response = match (status, file) {
                (Some(code), _) => {
                    format!("HTTP/1.1 {code} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
                }
                (None, None) => b"HTTP/1.1 404 Not Found\r\nX-Error-Code: EntryNotFound\r\nContent-Length: 0\r\n\
                                  Connection: close\r\n\r\n"
                    .to_vec(),
                (None, Some((name, body))) => {
                    let end = range_end.unwrap_or(body.len().saturating_sub(1)).min(body.len().saturating_sub(1));
                    let part = if body.is_empty() { &body[..] } else { &body[range_start..=end] };
                    let mut r = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\n\
                         ETag: \"etag-{}\"\r\nX-Repo-Commit: {COMMIT}\r\nConnection: close\r\n\r\n",
                        part.len(),
                        range_start,
                        end,
                        body.len(),
                        name.replace(['.', '/'], "_")
                    )
                    .into_bytes();
                    r.extend_from_slice(part);
                    r
                }
            };
            let _ = stream.write_all(&response);
            let _ = stream.flush();
        }
    });
    Server { endpoint, log }
}

fn with_env<T>(endpoint: &str, home: &std::path::Path, f: impl FnOnce() -> T) -> T {
    let _g = ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    std::env::set_var("HF_HOME", home);
    std::env::set_var("HF_ENDPOINT", endpoint);
    for v in ["HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN"] {
        std::env::remove_var(v);
    }
    // ureq reads proxies from the environment; the test server is local.
    for v in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
        std::env::remove_var(v);
    }
    f()
}

fn files() -> HashMap<String, Vec<u8>> {
    let index = serde_json::json!({"weight_map": {
        "b": "model-00002-of-00002.safetensors", "a": "model-00001-of-00002.safetensors",
        "c": "model-00002-of-00002.safetensors"}});
    [
        ("config.json", br#"{"model_type": "fgclip2"}"#.to_vec()),
        ("model.safetensors.index.json", index.to_string().into_bytes()),
        ("model-00001-of-00002.safetensors", vec![1u8; 1000]),
        ("model-00002-of-00002.safetensors", vec![2u8; 3000]),
        ("tokenizer.json", br#"{"tok": 1}"#.to_vec()),
        ("tokenizer_config.json", br#"{"pad_token": "<pad>"}"#.to_vec()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[test]
fn downloads_config_shards_and_optional_files() {
    let server = serve(files(), None);
    let home = tempfile::tempdir().unwrap();
    let got = with_env(&server.endpoint, home.path(), || hub::resolve("org/name")).unwrap();

    let snap = home.path().join("hub/models--org--name/snapshots").join(COMMIT);
    assert_eq!(got.root, snap);
    assert_eq!(got.config, snap.join("config.json"));
    assert_eq!(
        got.weights,
        vec![snap.join("model-00001-of-00002.safetensors"), snap.join("model-00002-of-00002.safetensors")]
    );
    assert_eq!(std::fs::read(&got.weights[1]).unwrap(), vec![2u8; 3000]);
    assert_eq!(got.tokenizer_json, Some(snap.join("tokenizer.json")));
    assert_eq!(got.tokenizer_config, Some(snap.join("tokenizer_config.json")));
    // 404s: absent, not errors.
    assert_eq!(got.vocab_json, None);
    assert_eq!(got.merges_txt, None);
    assert_eq!(got.preprocessor_config, None);
    assert_eq!(got.special_tokens_map, None);
    let refs_main = home.path().join("hub/models--org--name/refs/main");
    assert_eq!(std::fs::read_to_string(refs_main).unwrap().trim(), COMMIT);

    let log = server.log.lock().unwrap().clone();
    assert!(log.iter().any(|p| p.ends_with("/model.safetensors")), "single file tried first: {log:?}");
    assert!(log.iter().any(|p| p.ends_with("/special_tokens_map.json")), "{log:?}");

    // Now cached: offline mode finds the same files without the server.
    let offline = with_env("http://127.0.0.1:9", home.path(), || {
        std::env::set_var("HF_HUB_OFFLINE", "1");
        let r = hub::resolve("org/name");
        std::env::remove_var("HF_HUB_OFFLINE");
        r
    })
    .unwrap();
    assert_eq!(offline, got);

    // Hub unreachable and HF_HUB_OFFLINE not set: falls back to the cached snapshot (as huggingface_hub does).
    let dead = format!("http://127.0.0.1:{}", TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let fallback = with_env(&dead, home.path(), || hub::resolve("org/name")).unwrap();
    assert_eq!(fallback, got);
}

#[test]
fn single_file_weights() {
    let mut f = files();
    f.remove("model.safetensors.index.json");
    f.insert("model.safetensors".into(), vec![7u8; 100]);
    let server = serve(f, None);
    let home = tempfile::tempdir().unwrap();
    let got = with_env(&server.endpoint, home.path(), || hub::resolve("org/name")).unwrap();
    assert_eq!(got.weights.len(), 1);
    assert!(got.weights[0].ends_with("model.safetensors"));
    let log = server.log.lock().unwrap().clone();
    assert!(!log.iter().any(|p| p.ends_with("index.json")), "{log:?}");
}

#[test]
fn missing_required_files_are_hub_errors() {
    let mut f = files();
    f.remove("model-00002-of-00002.safetensors");
    let server = serve(f, None);
    let home = tempfile::tempdir().unwrap();
    let msg = with_env(&server.endpoint, home.path(), || hub::resolve("org/name")).unwrap_err().to_string();
    assert!(msg.contains("org/name") && msg.contains("model-00002-of-00002.safetensors"), "{msg}");

    let mut f = files();
    f.remove("model.safetensors.index.json");
    let server = serve(f, None);
    let home = tempfile::tempdir().unwrap();
    let msg = with_env(&server.endpoint, home.path(), || hub::resolve("org/name")).unwrap_err().to_string();
    assert!(msg.contains("neither model.safetensors nor model.safetensors.index.json"), "{msg}");

    let server = serve(HashMap::new(), None);
    let home = tempfile::tempdir().unwrap();
    let msg = with_env(&server.endpoint, home.path(), || hub::resolve("org/other")).unwrap_err().to_string();
    assert!(msg.contains("config.json"), "{msg}");
}

#[test]
fn http_and_connection_failures() {
    let home = tempfile::tempdir().unwrap();
    let server = serve(files(), Some(401));
    let err = with_env(&server.endpoint, home.path(), || hub::resolve("org/name")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, fgclip::Error::Hub { .. }), "{msg}");
    assert!(msg.contains("401") && msg.contains("HF_TOKEN"), "{msg}");

    // Nothing listens there: a transport error with the offline hint.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = with_env(&format!("http://127.0.0.1:{port}"), home.path(), || hub::resolve("org/name")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, fgclip::Error::Hub { .. }), "{msg}");
    assert!(msg.contains("config.json") && msg.contains("HF_HUB_OFFLINE"), "{msg}");
}
