//! The object-storage blob store against a real S3-compatible server.
//!
//! The server is `DEED_TEST_S3_ENDPOINT` if set (bucket `DEED_TEST_S3_BUCKET`,
//! default `deed-test`; credentials `DEED_TEST_S3_ACCESS_KEY` /
//! `DEED_TEST_S3_SECRET_KEY`, default `test`), otherwise a moto server this test
//! starts from the Python virtualenv at `$DEED_VENV` or `<workspace>/.venv`
//! (`python -m venv .venv && .venv/bin/pip install 'moto[server]'`).
//! Without either, the test fails under `CI=true` and is skipped with a notice
//! elsewhere.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use deed_store::blob::{
    conformance, download, upload, BlobError, BlobStore, Manifest, ObjectBlobStore, S3Config,
};

/// A moto server we started; killed when dropped.
struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Server {
    endpoint: String,
    bucket: String,
    access_key: String,
    secret_key: String,
    _moto: Option<Moto>,
}

fn venv_python() -> Option<PathBuf> {
    let venv = match std::env::var_os("DEED_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv"),
    };
    let python = venv.join("bin").join("python");
    python.exists().then_some(python)
}

fn wait_for_port(addr: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn start_moto() -> Result<Server, String> {
    let python = venv_python().ok_or(
        "no Python virtualenv with moto: set DEED_VENV or create <workspace>/.venv \
         (python3 -m venv .venv && .venv/bin/pip install 'moto[server]')",
    )?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let child = Command::new(&python)
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
    let moto = Moto(child);
    let addr = format!("127.0.0.1:{port}");
    if !wait_for_port(&addr, Duration::from_secs(30)) {
        return Err(format!("moto server did not listen on {addr} within 30 s"));
    }
    let server = Server {
        endpoint: format!("http://{addr}"),
        bucket: "deed-test".to_owned(),
        access_key: "test".to_owned(),
        secret_key: "test".to_owned(),
        _moto: Some(moto),
    };
    create_bucket(&addr, &server.bucket)?;
    Ok(server)
}

/// Creates the bucket with a bare path-style PUT, which moto accepts unsigned.
fn create_bucket(addr: &str, bucket: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send create-bucket: {e}"))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("read create-bucket reply: {e}"))?;
    let status = reply.split_whitespace().nth(1).unwrap_or("");
    match status {
        "200" | "409" => Ok(()),
        _ => Err(format!(
            "create bucket {bucket}: unexpected reply {:?}",
            reply.lines().next()
        )),
    }
}

fn server() -> Option<Server> {
    let found = match std::env::var("DEED_TEST_S3_ENDPOINT") {
        Ok(endpoint) => Ok(Server {
            endpoint,
            bucket: std::env::var("DEED_TEST_S3_BUCKET").unwrap_or_else(|_| "deed-test".into()),
            access_key: std::env::var("DEED_TEST_S3_ACCESS_KEY").unwrap_or_else(|_| "test".into()),
            secret_key: std::env::var("DEED_TEST_S3_SECRET_KEY").unwrap_or_else(|_| "test".into()),
            _moto: None,
        }),
        Err(_) => start_moto(),
    };
    match found {
        Ok(s) => Some(s),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("S3 blob store test needs an S3-compatible server: {why}")
        }
        Err(why) => {
            eprintln!("NOTICE: skipping the S3 blob store test: {why}");
            None
        }
    }
}

fn store(server: &Server, prefix: &str) -> ObjectBlobStore {
    let config = S3Config {
        endpoint: Some(server.endpoint.clone()),
        bucket: server.bucket.clone(),
        region: "us-east-1".to_owned(),
        access_key_id: server.access_key.clone(),
        secret_access_key: server.secret_key.clone(),
        allow_http: server.endpoint.starts_with("http://"),
        prefix: prefix.to_owned(),
    };
    ObjectBlobStore::s3(&config, conformance::limits()).expect("configure S3 store")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[test]
fn s3_blob_store_passes_the_conformance_suite_and_resumes_across_handles() {
    let Some(server) = server() else { return };
    // A prefix per run keeps reruns against a long-lived server independent.
    let run = format!(
        "run-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let n = AtomicU32::new(0);
    let rt = runtime();
    rt.block_on(conformance::suite(|| {
        let prefix = format!("{run}/suite-{}", n.fetch_add(1, Ordering::Relaxed));
        let s = store(&server, &prefix);
        async move { s }
    }));

    rt.block_on(async {
        let prefix = format!("{run}/resume");
        let data = conformance::sample(20_000, 42);
        let m = Manifest::build(&data, 4096).expect("build");
        {
            let first = store(&server, &prefix);
            for i in [0u32, 2, 4] {
                let r = m.chunk_range(i).expect("range");
                first
                    .put_chunk(&m, i, &data[r.start as usize..r.end as usize])
                    .await
                    .expect("put");
            }
            let err = first.finish(&m).await.expect_err("incomplete");
            assert!(matches!(err, BlobError::Incomplete { .. }), "{err:?}");
        }
        // A new handle (a restarted node) sees the staged chunks and no blob.
        let second = store(&server, &prefix);
        assert_eq!(second.manifest(&m.id).await.expect("manifest"), None);
        assert_eq!(
            second.missing_chunks(&m).await.expect("missing"),
            vec![1, 3]
        );
        assert_eq!(upload(&second, &data, 4096).await.expect("resume"), m);
        assert_eq!(download(&second, &m.id).await.expect("download"), data);
        assert_eq!(
            second.read_range(&m.id, 4000..12_300).await.expect("range"),
            &data[4000..12_300]
        );
    });
}
