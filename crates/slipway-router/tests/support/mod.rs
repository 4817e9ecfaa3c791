//! Test fixtures: small real hyper backends, a running proxy on an ephemeral port, and
//! clients speaking HTTP/1.1, h2c and raw TCP to it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use slipway_router::{Backend, Pool, RouteTable, Router, RouterConfig, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

/// Upper bound for any single test, so a broken proxy fails instead of hanging.
pub const LIMIT: Duration = Duration::from_secs(30);

pub type TestBody = BoxBody<Bytes, hyper::Error>;

/// Runs a test body under `LIMIT`.
pub async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("test did not finish within its time limit")
}

/// Polls `condition` every 10ms for up to 10s.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting until {what}");
}

/// A body fed from a channel, for streaming in tests.
pub struct ChanBody(pub mpsc::Receiver<Bytes>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

fn boxed<B>(body: B) -> TestBody
where
    B: Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static,
{
    body.map_err(|never| match never {}).boxed()
}

fn text(body: impl Into<Bytes>) -> TestBody {
    boxed(Full::new(body.into()))
}

/// How many `/busy/<ms>` requests a backend is handling, the most it ever handled at once,
/// and how many it finished.
#[derive(Default)]
pub struct Busy {
    pub now: AtomicUsize,
    pub max: AtomicUsize,
    pub done: AtomicUsize,
}

/// A real HTTP/1.1 backend. Paths:
/// `/hold` waits for `release`, `/slow` sleeps 10s, `/stream` sends `first\n`, waits for
/// `release`, then `second\n`; `/duplex` echoes the request body as it arrives; `/ws`
/// switches to an echo protocol; `/hop` answers with hop-by-hop headers; `/status/<code>`
/// answers with that status; `/bytes/<n>` answers n bytes; `/sleep/<ms>` answers after
/// sleeping that many milliseconds;
/// `/busy/<ms>` does the same while counting itself in `busy`; anything else describes the
/// request it received (version, method, uri, headers).
pub struct TestBackend {
    pub addr: SocketAddr,
    pub name: String,
    /// TCP connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Concurrency of `/busy/<ms>` requests, as the backend itself sees it.
    pub busy: Arc<Busy>,
    gate: Arc<Semaphore>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl TestBackend {
    pub async fn start(name: &str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        TestBackend::serve(listener, name)
    }

    /// Starts a backend on a specific address (retrying while the port is still in use).
    pub async fn start_on(addr: SocketAddr, name: &str) -> TestBackend {
        for _ in 0..200 {
            match TcpListener::bind(addr).await {
                Ok(listener) => return TestBackend::serve(listener, name),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        panic!("could not bind {addr} again");
    }

    fn serve(listener: TcpListener, name: &str) -> TestBackend {
        let addr = listener.local_addr().expect("local addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(Busy::default());
        let gate = Arc::new(Semaphore::new(0));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (name, connections, busy, gate, tasks) = (
                name.to_owned(),
                connections.clone(),
                busy.clone(),
                gate.clone(),
                tasks.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (name, busy, gate) = (name.clone(), busy.clone(), gate.clone());
                    let conn = tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let (name, busy, gate) = (name.clone(), busy.clone(), gate.clone());
                            async move {
                                Ok::<_, Infallible>(backend_handler(req, &name, &busy, gate).await)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await;
                    });
                    tasks.lock().expect("tasks").push(conn);
                }
            })
        };
        tasks.lock().expect("tasks").push(accept);
        TestBackend {
            addr,
            name: name.to_owned(),
            connections,
            busy,
            gate,
            tasks,
        }
    }

    /// Lets `n` waiting `/hold` or `/stream` requests continue.
    pub fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }

    /// Kills the backend like a crashed process: the listener and every connection close.
    pub async fn kill(self) {
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock().expect("tasks"));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// A ready router backend pointing at this server.
    pub fn backend(&self) -> Arc<Backend> {
        ready_backend(self.addr, &self.name)
    }
}

async fn backend_handler(
    req: Request<Incoming>,
    name: &str,
    busy: &Busy,
    gate: Arc<Semaphore>,
) -> Response<TestBody> {
    let path = req.uri().path();
    if let Some(ms) = path.strip_prefix("/busy/") {
        let ms: u64 = ms.parse().expect("/busy/<milliseconds>");
        let now = busy.now.fetch_add(1, Ordering::SeqCst) + 1;
        busy.max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        busy.now.fetch_sub(1, Ordering::SeqCst);
        busy.done.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::new(text(format!("busy {ms}ms")));
        response.headers_mut().insert(
            "x-backend",
            name.parse().expect("backend name is a header value"),
        );
        return response;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(|code| StatusCode::from_u16(code).ok())
            .expect("/status/<code> with a valid status code");
        let mut response = Response::new(text(format!("status {code}")));
        *response.status_mut() = status;
        return response;
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().expect("/bytes/<count>");
        return Response::new(text(vec![b'x'; n]));
    }
    if let Some(ms) = path.strip_prefix("/sleep/") {
        let ms: u64 = ms.parse().expect("/sleep/<milliseconds>");
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Response::new(text(format!("slept {ms}ms")));
    }
    let mut response = match req.uri().path() {
        "/hold" => {
            gate.acquire().await.expect("gate open").forget();
            Response::new(text(format!("held by {name}")))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Response::new(text("slow"))
        }
        "/stream" => {
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"first\n")).await;
                gate.acquire().await.expect("gate open").forget();
                let _ = tx.send(Bytes::from_static(b"second\n")).await;
            });
            Response::new(boxed(ChanBody(rx)))
        }
        "/duplex" => Response::new(req.into_body().boxed()),
        "/ws" => {
            let mut req = req;
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            let mut response = Response::new(text(""));
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            response
                .headers_mut()
                .insert("upgrade", "echo".parse().expect("value"));
            response
                .headers_mut()
                .insert("connection", "upgrade".parse().expect("value"));
            response
        }
        "/hop" => {
            let mut response = Response::new(text("hop"));
            let headers = response.headers_mut();
            headers.insert("connection", "x-internal".parse().expect("value"));
            headers.insert("x-internal", "1".parse().expect("value"));
            headers.insert("keep-alive", "timeout=5".parse().expect("value"));
            headers.insert("x-public", "1".parse().expect("value"));
            response
        }
        _ => {
            let mut description = format!(
                "backend={name}\nversion={:?}\nmethod={}\nuri={}\n",
                req.version(),
                req.method(),
                req.uri()
            );
            for (header, value) in req.headers() {
                description.push_str(&format!(
                    "{header}: {}\n",
                    String::from_utf8_lossy(value.as_bytes())
                ));
            }
            Response::new(text(description))
        }
    };
    response.headers_mut().insert(
        "x-backend",
        name.parse().expect("backend name is a header value"),
    );
    response
}

/// A ready backend for `addr`.
pub fn ready_backend(addr: SocketAddr, instance: &str) -> Arc<Backend> {
    let backend = Backend::new(addr, instance);
    backend.set_ready(true);
    backend
}

/// A target of app `shop` with one pool per `(weight, backends)`.
pub fn target(service: &str, pools: Vec<(u32, Vec<Arc<Backend>>)>) -> Arc<Target> {
    Arc::new(Target {
        app: "shop".into(),
        service: service.into(),
        pools: pools
            .into_iter()
            .enumerate()
            .map(|(i, (weight, backends))| Pool::new(i as u64 + 1, weight, backends))
            .collect(),
        ..Target::default()
    })
}

/// Like `target`, with the options `configure` sets.
pub fn target_with(
    service: &str,
    pools: Vec<(u32, Vec<Arc<Backend>>)>,
    configure: impl FnOnce(&mut Target),
) -> Arc<Target> {
    let mut target = Arc::unwrap_or_clone(target(service, pools));
    configure(&mut target);
    Arc::new(target)
}

/// A table routing all of `host` to service `web` on `backends` (one pool, weight 100).
pub fn host_table(host: &str, backends: Vec<Arc<Backend>>) -> RouteTable {
    let mut table = RouteTable::new();
    table.add_host(host, target("web", vec![(100, backends)]));
    table
}

/// A router serving on an ephemeral port until dropped or stopped.
pub struct Proxy {
    pub router: Arc<Router>,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<std::io::Result<()>>>,
}

impl Proxy {
    pub async fn start(config: RouterConfig) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("local addr");
        let router = Router::new(config);
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(router.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        Proxy {
            router,
            addr,
            stop: Some(stop),
            served: Some(served),
        }
    }

    pub async fn with_table(table: RouteTable) -> Proxy {
        Proxy::with_config(RouterConfig::default(), table).await
    }

    /// A proxy with `config`, serving `table`.
    pub async fn with_config(config: RouterConfig, table: RouteTable) -> Proxy {
        let proxy = Proxy::start(config).await;
        proxy.router.publish(table);
        proxy
    }

    /// Asks the proxy to shut down; returns the handle of the `serve` task.
    pub fn stop(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.served.take().expect("proxy already stopped")
    }
}

/// A response read to its end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The backend that answered (`x-backend`).
    pub fn backend(&self) -> &str {
        self.header("x-backend").unwrap_or("")
    }

    /// The values of a request header as the echo backend saw it.
    pub fn seen(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}: ");
        self.body
            .lines()
            .filter_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
}

/// An HTTP/1.1 client connection to the proxy.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<TestBody>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Client { sender }
    }

    pub async fn send(&mut self, req: Request<TestBody>) -> Response<Incoming> {
        self.sender.ready().await.expect("client connection ready");
        self.sender
            .send_request(req)
            .await
            .expect("response from proxy")
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Reply {
        let req = Request::get(path)
            .header(HOST, host)
            .body(text(""))
            .expect("request");
        read(self.send(req).await).await
    }
}

/// Starts a request to `host` and `path`.
pub fn request(method: &str, host: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, host)
}

/// A full-body request for `Client::send`.
pub fn with_body(builder: http::request::Builder, body: impl Into<Bytes>) -> Request<TestBody> {
    builder.body(text(body)).expect("request")
}

/// A streamed-body request for `Client::send`; feed it through the returned sender.
pub fn with_stream(builder: http::request::Builder) -> (Request<TestBody>, mpsc::Sender<Bytes>) {
    let (tx, rx) = mpsc::channel(4);
    (builder.body(boxed(ChanBody(rx))).expect("request"), tx)
}

/// GET with extra request headers over a new client connection.
pub async fn get_with(
    proxy: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut builder = request("GET", host, path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    read(
        Client::connect(proxy)
            .await
            .send(with_body(builder, ""))
            .await,
    )
    .await
}

/// GET over a new client connection.
pub async fn get(proxy: SocketAddr, host: &str, path: &str) -> Reply {
    Client::connect(proxy).await.get(host, path).await
}

/// Reads a response to its end.
pub async fn read(response: Response<Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Reads from a raw socket until the end of a response head.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read head");
        assert!(n > 0, "connection closed inside a response head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// An h2c (prior knowledge) client connection to the proxy.
pub async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<TestBody> {
    let stream = TcpStream::connect(addr).await.expect("connect to proxy");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

/// An empty body.
pub fn empty() -> TestBody {
    text("")
}
