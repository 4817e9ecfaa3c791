//! A small HTTP/1.1 client for the server's API over its Unix socket.
//!
//! The CLI is only a client of the REST API: every command builds one of the request
//! types in `slipway_control::dto` and renders the answer.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(data_dir: &Path) -> Client {
        Client {
            socket: slipway_control::socket_path(data_dir),
        }
    }

    /// Whether a server answers on the socket.
    pub async fn is_up(&self) -> bool {
        self.get::<slipway_control::dto::ServerInfo>("/v1/server")
            .await
            .is_ok()
    }

    /// Whether a server listens on the socket: a connection, no request. Enough to decide
    /// whether to start one; the request that follows reports a server that cannot answer.
    pub async fn is_listening(&self) -> bool {
        UnixStream::connect(&self.socket).await.is_ok()
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Response<Incoming>> {
        let stream = UnixStream::connect(&self.socket).await.with_context(|| {
            format!(
                "no slipway server is running for this data directory (socket {})\n  hint: start one with `slipway up` or `slipway server` (commands that change something, such as `deploy` or `secret set`, start one themselves), or pass the right --data-dir / SLIPWAY_HOME",
                self.socket.display()
            )
        })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "slipway")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        Ok(sender.send_request(req).await?)
    }

    async fn check(resp: Response<Incoming>) -> anyhow::Result<Response<Incoming>> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let msg = serde_json::from_slice::<slipway_control::dto::ApiError>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        if status == StatusCode::NOT_FOUND && msg.is_empty() {
            bail!("the server does not know this request (is it an older slipway?)");
        }
        bail!("{msg}")
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = Self::check(self.send("GET", path, None).await?).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(serde_json::from_slice(&body)?)
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.call("POST", path, body).await
    }

    /// Sends `body` as JSON with `method` and reads a JSON answer (`null` when empty).
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let mut bytes = serde_json::to_vec(body)?;
        let sent = self.send(method, path, Some(bytes.clone())).await;
        // The body may hold a secret's value: wipe this copy (hyper owns the other).
        zeroize::Zeroize::zeroize(&mut bytes);
        let resp = Self::check(sent?).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        if body.is_empty() {
            return Ok(serde_json::from_slice(b"null")?);
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Follows a server-sent-events answer and calls `each` with every event's data.
    pub async fn sse<T: DeserializeOwned>(
        &self,
        path: &str,
        mut each: impl FnMut(T),
    ) -> anyhow::Result<()> {
        let resp = Self::check(self.send("GET", path, None).await?).await?;
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            if let Some(data) = frame.data_ref() {
                buf.extend_from_slice(data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if let Some(json) = line.strip_prefix(b"data:") {
                        each(serde_json::from_slice(json.trim_ascii())?);
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends a request whose answer is newline-delimited JSON and calls `each` per item.
    pub async fn stream<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
        mut each: impl FnMut(T),
    ) -> anyhow::Result<()> {
        let body = body.map(serde_json::to_vec).transpose()?;
        let resp = Self::check(self.send(method, path, body).await?).await?;
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            if let Some(data) = frame.data_ref() {
                buf.extend_from_slice(data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if line.len() > 1 {
                        each(serde_json::from_slice(&line)?);
                    }
                }
            }
        }
        Ok(())
    }
}
