//! The bare-hyper limit of `bench/run`: an HTTP/1.1 server that reads each request's whole body
//! and answers `200 ok`, nothing else. What it serves per second on a machine is the ceiling of
//! HTTP parsing and loopback networking there, the figure hookgate's rates are divided by. It is
//! also the receiver that hookgate delivers to in the delivery scenario.
//!
//! ```text
//! cargo run --release --example bench_limit -- 127.0.0.1:0
//! ```
//!
//! It prints `bench_limit: listening on http://ADDRESS` once bound, serves until killed, and
//! answers `GET /count` with the number of requests it answered so far (bodies read in full).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn main() -> anyhow::Result<()> {
    let address: SocketAddr = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:0").parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(address))
}

async fn serve(address: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(address).await?;
    println!("bench_limit: listening on http://{}", listener.local_addr()?);
    let answered = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("bench_limit: accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        stream.set_nodelay(true)?;
        let answered = answered.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| reply(request, answered.clone()));
            // A connection the client closed ends here; there is nothing to report.
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn reply(request: Request<Incoming>, answered: Arc<AtomicU64>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    if request.method() == Method::GET && request.uri().path() == "/count" {
        let count = answered.load(Ordering::Relaxed);
        return Ok(Response::new(Full::new(Bytes::from(count.to_string()))));
    }
    request.into_body().collect().await?;
    answered.fetch_add(1, Ordering::Relaxed);
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}
