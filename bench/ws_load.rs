//! WebSocket load for `bench/run`: an echo server and a pipelined client.
//!
//! `ws-load echo --port P` is the upstream of the WebSocket rows: it accepts
//! WebSockets on 127.0.0.1:P, sends every text or binary message back and
//! answers a close. Pings are answered by tungstenite itself.
//!
//! `ws-load load --url ws://127.0.0.1:P/path` opens `--connections`
//! WebSockets and keeps `--window` messages of `--size` bytes in flight on
//! each: it sends a window, then one new message per echo received. The echo
//! comes back in order on its connection, so the send times of the messages
//! in flight are a queue and each echo's round trip is now minus the oldest
//! send time. `--warmup` seconds run first and are not counted; then
//! `--seconds` are measured: echoes received in that window count as
//! messages, and the round trips of those sent in it are the latency samples.
//! A closed loop: the figures are the relay's throughput at saturation and the
//! latency at that load, both compared with the same load straight to the echo
//! server.
//!
//! Output: one line of `key=value` pairs on stdout, e.g.
//!   WSLOAD messages=412000 seconds=5.000 msgs_per_s=82400.0 p50_us=190.2 p99_us=610.4 errors=0
//! Exit status 0 without errors, 1 with any (a refused handshake prints its
//! HTTP status on stderr), 2 on a usage error.
//!
//! usage: ws-load echo --port P
//!        ws-load load --url ws://127.0.0.1:P/path [--header 'Name: value']...
//!            [--connections 16] [--seconds 5] [--warmup 1] [--size 128] [--window 4]

use std::collections::VecDeque;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::header::{HeaderName, HeaderValue};
use rand::Rng as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const USAGE: &str = "usage: ws-load echo --port P
       ws-load load --url ws://127.0.0.1:P/path [--header 'Name: value']...
           [--connections 16] [--seconds 5] [--warmup 1] [--size 128] [--window 4]";

/// Latency samples kept over all connections. Beyond it each connection keeps
/// a uniform random sample of its round trips (reservoir sampling), so the
/// memory stays bounded on a long run and the percentiles stay unbiased.
const MAX_SAMPLES: usize = 2_000_000;

/// How long a connection waits for its closing handshake after the run.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

struct LoadArgs {
    url: String,
    headers: Vec<String>,
    connections: usize,
    seconds: f64,
    warmup: f64,
    size: usize,
    window: usize,
}

enum Mode {
    Echo { port: u16 },
    Load(LoadArgs),
}

fn parse_args() -> Result<Option<Mode>> {
    let mut it = std::env::args().skip(1);
    let mode = match it.next().as_deref() {
        None | Some("-h" | "--help") => return Ok(None),
        Some(m @ ("echo" | "load")) => m.to_owned(),
        Some(other) => bail!("unknown mode {other:?} (echo or load)"),
    };
    let mut a = LoadArgs {
        url: String::new(),
        headers: Vec::new(),
        connections: 16,
        seconds: 5.0,
        warmup: 1.0,
        size: 128,
        window: 4,
    };
    let mut port = None;
    let mut url = None;
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = || -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().with_context(|| format!("{flag} needs a value")),
            }
        };
        match (mode.as_str(), flag.as_str()) {
            ("echo", "--port") => port = Some(num(&flag, &value()?)?),
            ("load", "--url") => url = Some(value()?),
            ("load", "--header") => a.headers.push(value()?),
            ("load", "--connections") => a.connections = num(&flag, &value()?)?,
            ("load", "--seconds") => a.seconds = num(&flag, &value()?)?,
            ("load", "--warmup") => a.warmup = num(&flag, &value()?)?,
            ("load", "--size") => a.size = num(&flag, &value()?)?,
            ("load", "--window") => a.window = num(&flag, &value()?)?,
            _ => bail!("unknown argument {flag} for {mode}"),
        }
    }
    if mode == "echo" {
        return Ok(Some(Mode::Echo {
            port: port.context("--port is required")?,
        }));
    }
    a.url = url.context("--url is required")?;
    if !(a.seconds.is_finite() && a.seconds > 0.0) || a.connections == 0 || a.window == 0 {
        bail!("seconds, connections and window must be positive");
    }
    if !(a.warmup.is_finite() && a.warmup >= 0.0) {
        bail!("warmup must be zero or positive");
    }
    Ok(Some(Mode::Load(a)))
}

fn num<T: FromStr>(flag: &str, v: &str) -> Result<T> {
    v.parse()
        .map_err(|_| anyhow::anyhow!("{flag}: not a valid number: {v:?}"))
}

// ---------------------------------------------------------------- echo ---

async fn echo(port: u16) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    // bench/run waits for this line before it sends any load.
    println!("WSECHO listening on 127.0.0.1:{port}");
    loop {
        let (tcp, _) = listener.accept().await.context("accepting")?;
        tokio::spawn(async move {
            if let Err(e) = echo_one(tcp).await {
                eprintln!("ws-load echo: {e:#}");
            }
        });
    }
}

async fn echo_one(tcp: TcpStream) -> Result<()> {
    tcp.set_nodelay(true)?;
    let mut ws = tokio_tungstenite::accept_async(tcp)
        .await
        .context("WebSocket handshake")?;
    // `next` answers pings and a close (queued replies are flushed by the next
    // read or write); it ends after the closing handshake.
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => ws.send(m).await?,
            Ok(_) => {}
            Err(WsError::ConnectionClosed | WsError::Protocol(_)) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- load ---

/// What one connection saw in the measured window.
#[derive(Default)]
struct Tally {
    messages: u64,
    /// Round trips of the messages sent in the measured window, a uniform
    /// sample of at most the connection's share of [`MAX_SAMPLES`].
    samples: Vec<Duration>,
    seen: u64,
    errors: u64,
}

impl Tally {
    fn sample(&mut self, rtt: Duration, cap: usize) {
        self.seen += 1;
        if self.samples.len() < cap {
            self.samples.push(rtt);
        } else {
            let j = rand::thread_rng().gen_range(0..self.seen);
            if let Ok(j) = usize::try_from(j) {
                if j < cap {
                    self.samples[j] = rtt;
                }
            }
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn open(a: &LoadArgs) -> Result<Ws> {
    let mut req = a
        .url
        .as_str()
        .into_client_request()
        .with_context(|| format!("--url {:?}", a.url))?;
    for h in &a.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("--header {h:?}: not 'Name: value'"))?;
        req.headers_mut().append(
            HeaderName::from_bytes(name.trim().as_bytes())
                .with_context(|| format!("--header {h:?}: bad name"))?,
            HeaderValue::from_str(value.trim())
                .with_context(|| format!("--header {h:?}: bad value"))?,
        );
    }
    match tokio_tungstenite::connect_async_with_config(req, None, true).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => bail!("handshake refused: HTTP {}", resp.status()),
        Err(e) => Err(e).context("opening the WebSocket"),
    }
}

/// Drives one connection until `end`; counts what falls in `[measure, end)`.
async fn drive(
    mut ws: Ws,
    payload: Bytes,
    window: usize,
    measure: Instant,
    end: Instant,
    cap: usize,
) -> Tally {
    let mut t = Tally::default();
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(window);
    for _ in 0..window {
        if ws.feed(Message::Binary(payload.clone())).await.is_err() {
            t.errors += 1;
            return t;
        }
        in_flight.push_back(Instant::now());
    }
    if ws.flush().await.is_err() {
        t.errors += 1;
        return t;
    }
    loop {
        let msg = match timeout_at(end, ws.next()).await {
            Err(_) => break, // the run is over
            Ok(None) => {
                t.errors += 1; // closed under us
                return t;
            }
            Ok(Some(Err(_))) => {
                t.errors += 1;
                return t;
            }
            Ok(Some(Ok(m))) => m,
        };
        let now = Instant::now();
        match msg {
            Message::Binary(b) if b.len() == payload.len() => {}
            Message::Ping(_) | Message::Pong(_) => continue,
            _ => {
                t.errors += 1; // not our echo
                return t;
            }
        }
        let Some(sent) = in_flight.pop_front() else {
            t.errors += 1; // an echo nobody asked for
            return t;
        };
        if now >= measure {
            t.messages += 1;
            if sent >= measure {
                t.sample(now - sent, cap);
            }
        }
        if ws.send(Message::Binary(payload.clone())).await.is_err() {
            t.errors += 1;
            return t;
        }
        in_flight.push_back(Instant::now());
    }
    // Close politely; the echoes still in flight are not counted.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
    t
}

async fn load(a: LoadArgs) -> Result<bool> {
    let mut conns = Vec::with_capacity(a.connections);
    for i in 0..a.connections {
        conns.push(
            open(&a)
                .await
                .with_context(|| format!("connection {} of {}", i + 1, a.connections))?,
        );
    }
    let payload = Bytes::from(vec![b'x'; a.size]);
    let start = Instant::now();
    let measure = start + Duration::from_secs_f64(a.warmup);
    let end = measure + Duration::from_secs_f64(a.seconds);
    let cap = (MAX_SAMPLES / a.connections).max(1);
    let mut tasks = JoinSet::new();
    for ws in conns {
        tasks.spawn(drive(ws, payload.clone(), a.window, measure, end, cap));
    }
    let (mut messages, mut errors, mut samples) = (0u64, 0u64, Vec::new());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(t) => {
                messages += t.messages;
                errors += t.errors;
                samples.extend(t.samples);
            }
            Err(_) => errors += 1, // the task panicked
        }
    }
    samples.sort_unstable();
    println!(
        "WSLOAD messages={messages} seconds={:.3} msgs_per_s={:.1} p50_us={} p99_us={} errors={errors}",
        a.seconds,
        messages as f64 / a.seconds,
        us(percentile(&samples, 50.0)),
        us(percentile(&samples, 99.0)),
    );
    if errors > 0 {
        eprintln!("ws-load: {errors} connection(s) ended with an error before the run was over");
    }
    Ok(errors == 0)
}

/// Nearest rank: the smallest value with at least p % of the values at or below it.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64()
}

fn us(secs: f64) -> String {
    if secs.is_nan() {
        "nan".to_owned()
    } else {
        format!("{:.1}", secs * 1e6)
    }
}

fn main() -> ExitCode {
    let mode = match parse_args() {
        Ok(Some(m)) => m,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ws-load: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The echo server is one thread, like the single nginx worker of the HTTP
    // rows; the load uses a thread per CPU it may run on.
    let rt = match mode {
        Mode::Echo { .. } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Mode::Load(_) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let result = rt.context("building the tokio runtime").and_then(|rt| {
        rt.block_on(async {
            match mode {
                Mode::Echo { port } => echo(port).await.map(|()| true),
                Mode::Load(a) => load(a).await,
            }
        })
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ws-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
