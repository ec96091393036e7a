//! Fixed-rate (open-loop) HTTP/1.1 latency probe for `bench/run`.
//!
//! wrk drives a closed loop as fast as it can, so its latencies are latencies
//! at saturation. This probe *schedules* requests instead: request i is due at
//! `start + i/rate`, whatever happened to earlier requests. Its latency runs
//! from the moment it is ready to go — its due time, or later if the probe's
//! own pacer woke late — to the last byte of its response body. A request
//! that waits because every connection is busy with a slow server is charged
//! for the wait: no coordinated omission. The pacer's own lateness is the
//! probe's fault, not the server's: on a busy 2-core machine it reached ~1 ms
//! at p99 and drowned the figure being measured, so it is reported apart
//! (`pacer_lag_p99_us`) and not charged.
//!
//! It is compiled because its own overhead is part of every figure: the Python
//! probe it replaces had 1–2 ms of scheduling lag at p99 on a busy 2-core
//! machine, as large as the "added p99 ≤ 1 ms" target it was meant to check.
//! Here a plain OS thread paces the schedule with `nanosleep` (tokio's timer
//! wheel has 1 ms granularity) and hands each due request to a current-thread
//! tokio runtime, which sends it on one of `--connections` keep-alive
//! connections (hyper's HTTP/1.1 client connection, `TCP_NODELAY`).
//!
//! `--warmup S` sends the same schedule for S seconds before the measured
//! window and leaves those requests out of the percentiles (their statuses
//! and errors still count). Without it, a server idle before the probe pays
//! its cold start — caches, TLBs and, on a VM, memory the host took back —
//! in the first requests, and on a single-threaded server the requests queued
//! behind them: one ~15 ms cold request after 30 s idle held up ~20 others,
//! which is most of a 3,000-request round's p99. The window then measures a
//! server under a steady 1,000 req/s; the cold start is reported on its own as
//! `first_us`, the latency of the very first request.
//!
//! Output: one line of `key=value` pairs on stdout, e.g.
//!   PROBE sent=3000 ok=3000 unexpected=0 errors=0 rate=999.8 p50_us=210.4 p90_us=260.0 p99_us=390.1 max_us=900.2 lag_p99_us=80.3 pacer_lag_p99_us=60.1 first_us=5120.7
//! (`lag_p99_us`: p99 of due time to handing the request to its connection;
//! `pacer_lag_p99_us`: p99 of due time to the runtime taking the request from
//! the pacer, which the latency figures leave out.) Exit status 0 when every response
//! had the expected status, 1 otherwise, 2 on a usage error.
//!
//! usage: latency-probe --port 8080 [--host 127.0.0.1] [--path /stream]
//!            [--method GET] [--header 'Name: value']... [--tokens-file FILE]
//!            [--rate 1000] [--seconds 5] [--warmup 0] [--connections 8]
//!            [--expect 200] [--timeout 5]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

const USAGE: &str = "usage: latency-probe --port PORT [--host 127.0.0.1] [--path /] [--method GET]
           [--header 'Name: value']... [--tokens-file FILE] [--rate 1000]
           [--seconds 5] [--warmup 0] [--connections 8] [--expect 200] [--timeout 5]";

/// Extra connections a burst may open: at most this many times `--connections`.
const MAX_CONNECTIONS_FACTOR: usize = 4;

type Sender = SendRequest<Empty<Bytes>>;

struct Args {
    host: String,
    port: u16,
    path: String,
    method: String,
    headers: Vec<String>,
    tokens_file: Option<String>,
    rate: f64,
    seconds: f64,
    warmup: f64,
    connections: usize,
    expect: u16,
    timeout: f64,
}

fn parse_args() -> Result<Option<Args>> {
    let mut a = Args {
        host: "127.0.0.1".to_owned(),
        port: 0,
        path: "/".to_owned(),
        method: "GET".to_owned(),
        headers: Vec::new(),
        tokens_file: None,
        rate: 1000.0,
        seconds: 5.0,
        warmup: 0.0,
        connections: 8,
        expect: 200,
        timeout: 5.0,
    };
    let mut port = None;
    let mut it = std::env::args().skip(1);
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
        match flag.as_str() {
            "--host" => a.host = value()?,
            "--port" => port = Some(num(&flag, &value()?)?),
            "--path" => a.path = value()?,
            "--method" => a.method = value()?,
            "--header" => a.headers.push(value()?),
            "--tokens-file" => a.tokens_file = Some(value()?),
            "--rate" => a.rate = num(&flag, &value()?)?,
            "--seconds" => a.seconds = num(&flag, &value()?)?,
            "--warmup" => a.warmup = num(&flag, &value()?)?,
            "--connections" => a.connections = num(&flag, &value()?)?,
            "--expect" => a.expect = num(&flag, &value()?)?,
            "--timeout" => a.timeout = num(&flag, &value()?)?,
            _ => bail!("unknown argument {flag}"),
        }
    }
    a.port = port.context("--port is required")?;
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !positive(a.rate) || !positive(a.seconds) || !positive(a.timeout) || a.connections == 0 {
        bail!("rate, seconds, timeout and connections must be positive");
    }
    if !(a.warmup.is_finite() && a.warmup >= 0.0) {
        bail!("warmup must be zero or positive");
    }
    Ok(Some(a))
}

fn num<T: FromStr>(flag: &str, v: &str) -> Result<T> {
    v.parse()
        .map_err(|_| anyhow::anyhow!("{flag}: not a valid number: {v:?}"))
}

/// When request `i` of a schedule at `rate` per second starting at `start` is due.
fn due_at(start: Instant, rate: f64, i: usize) -> Instant {
    start + Duration::from_secs_f64(i as f64 / rate)
}

/// Everything a request needs, prepared before the clock starts.
struct Plan {
    addr: SocketAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    /// `Bearer <token>` values, used round-robin (only as many as will be sent).
    bearers: Vec<HeaderValue>,
    expect: StatusCode,
    rate: f64,
    total: usize,
    /// The first `warm` requests are sent but not measured.
    warm: usize,
    connections: usize,
    timeout: Duration,
}

impl Plan {
    fn request(&self, i: usize) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        if !self.bearers.is_empty() {
            let bearer = self.bearers[i % self.bearers.len()].clone();
            req.headers_mut().insert(AUTHORIZATION, bearer);
        }
        req
    }

    fn due(&self, start: Instant, i: usize) -> Instant {
        due_at(start, self.rate, i)
    }
}

async fn plan(a: &Args) -> Result<Plan> {
    let addr = tokio::net::lookup_host((a.host.as_str(), a.port))
        .await
        .with_context(|| format!("resolving {}", a.host))?
        .next()
        .with_context(|| format!("no address for {}", a.host))?;
    let method = Method::from_bytes(a.method.as_bytes()).context("--method")?;
    let uri = Uri::from_str(&a.path).with_context(|| format!("--path {:?}", a.path))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        HOST,
        HeaderValue::from_str(&format!("{}:{}", a.host, a.port))?,
    );
    for h in &a.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("--header {h:?}: expected 'Name: value'"))?;
        headers.append(
            HeaderName::from_str(name.trim()).with_context(|| format!("--header {h:?}"))?,
            HeaderValue::from_str(value.trim()).with_context(|| format!("--header {h:?}"))?,
        );
    }
    let warm = (a.rate * a.warmup) as usize;
    let total = warm + (a.rate * a.seconds) as usize;
    let mut bearers = Vec::new();
    if let Some(file) = &a.tokens_file {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        for token in text.lines().map(str::trim).filter(|t| !t.is_empty()) {
            if bearers.len() == total.max(1) {
                break; // request i uses token i % n: later tokens would never be used
            }
            bearers.push(
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .with_context(|| format!("a token in {file} is not a valid header value"))?,
            );
        }
        if bearers.is_empty() {
            bail!("no tokens in {file}");
        }
    }
    Ok(Plan {
        addr,
        method,
        uri,
        headers,
        bearers,
        expect: StatusCode::from_u16(a.expect).context("--expect")?,
        rate: a.rate,
        total,
        warm,
        connections: a.connections,
        timeout: Duration::from_secs_f64(a.timeout),
    })
}

/// A new keep-alive connection; its hyper connection task runs on its own.
async fn connect(addr: SocketAddr) -> Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // A connection error also fails the request on it, which counts it.
        let _ = conn.await;
    });
    Ok(sender)
}

enum Failure {
    Connect,
    Transport,
    Timeout,
}

struct Done {
    status: StatusCode,
    /// Ready time (see the module comment) to the last byte of the body.
    latency: Duration,
    /// Due time to handing the request to its connection.
    lag: Duration,
}

/// What a request task hands back: its outcome and, if still usable, its connection.
struct Outcome {
    /// The request's index in the schedule.
    index: usize,
    sender: Option<Sender>,
    result: std::result::Result<Done, Failure>,
}

/// One request on `sender`, or on a new connection when `sender` is `None`.
async fn exchange(
    index: usize,
    sender: Option<Sender>,
    req: Request<Empty<Bytes>>,
    due: Instant,
    ready: Instant,
    addr: SocketAddr,
) -> Outcome {
    let fail = |f| Outcome {
        index,
        sender: None,
        result: Err(f),
    };
    let mut sender = match sender {
        Some(s) => s,
        None => match connect(addr).await {
            Ok(s) => s,
            Err(_) => return fail(Failure::Connect),
        },
    };
    if sender.ready().await.is_err() {
        // The server closed this keep-alive connection (e.g. after its
        // keepalive_requests): replace it; the reconnect is part of the latency.
        sender = match connect(addr).await {
            Ok(s) => s,
            Err(_) => return fail(Failure::Connect),
        };
        if sender.ready().await.is_err() {
            return fail(Failure::Transport);
        }
    }
    let lag = due.elapsed();
    let Ok(resp) = sender.send_request(req).await else {
        return fail(Failure::Transport);
    };
    let status = resp.status();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return fail(Failure::Transport);
        }
    }
    let latency = ready.elapsed();
    Outcome {
        index,
        sender: Some(sender),
        result: Ok(Done {
            status,
            latency,
            lag,
        }),
    }
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    lags: Vec<Duration>,
    pacer_lags: Vec<Duration>,
    /// The first request's latency: the server's cold start.
    first: Option<Duration>,
    ok: usize,
    unexpected: usize,
    connect_errors: usize,
    transport_errors: usize,
    timeouts: usize,
    /// Requests without an answer when the run's time was up.
    unfinished: usize,
}

impl Tally {
    fn errors(&self) -> usize {
        self.connect_errors + self.transport_errors + self.timeouts + self.unfinished
    }
}

/// Sends the schedule; returns the tally and the elapsed time from the start.
async fn run(plan: Plan) -> Result<(Tally, Duration)> {
    let max_conns = plan.connections * MAX_CONNECTIONS_FACTOR;
    let mut idle: VecDeque<Sender> = VecDeque::with_capacity(max_conns);
    for _ in 0..plan.connections {
        idle.push_back(
            connect(plan.addr)
                .await
                .with_context(|| format!("connecting to {}", plan.addr))?,
        );
    }
    // Connections the probe holds: idle ones plus those of requests in flight.
    let mut conns = idle.len();

    // A short head start, so that request 0 is not late because of thread start-up.
    let start = Instant::now() + Duration::from_millis(5);
    let deadline = plan.due(start, plan.total) + plan.timeout;

    // The pacer: a plain thread sleeping until each due time (nanosleep, µs
    // precision), then waking the runtime with the request's index.
    let (tx, mut rx) = mpsc::unbounded_channel::<usize>();
    let pacer = {
        let (rate, total) = (plan.rate, plan.total);
        std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || {
                for i in 0..total {
                    let due = due_at(start, rate, i);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    if tx.send(i).is_err() {
                        break;
                    }
                }
            })?
    };

    let mut tally = Tally::default();
    // Due requests with the moment each was ready (see the module comment).
    let mut backlog: VecDeque<(usize, Instant)> = VecDeque::new();
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut finished = 0usize;
    let mut pacer_done = plan.total == 0;
    let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
    tokio::pin!(sleep);

    while finished < plan.total {
        // Due requests take an idle connection, else a new one while fewer
        // than MAX_CONNECTIONS_FACTOR × --connections exist; else they wait in
        // the backlog, and that wait is part of their latency (measured from
        // the due time).
        while let Some(&(i, ready)) = backlog.front() {
            let sender = loop {
                match idle.pop_front() {
                    Some(s) if s.is_closed() => conns -= 1,
                    other => break other,
                }
            };
            if sender.is_none() {
                if conns >= max_conns {
                    break;
                }
                conns += 1;
            }
            backlog.pop_front();
            let (req, due, addr, timeout) =
                (plan.request(i), plan.due(start, i), plan.addr, plan.timeout);
            tasks.spawn(async move {
                match tokio::time::timeout(timeout, exchange(i, sender, req, due, ready, addr))
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(_) => Outcome {
                        index: i,
                        sender: None,
                        result: Err(Failure::Timeout),
                    },
                }
            });
        }

        tokio::select! {
            biased;
            Some(joined) = tasks.join_next() => {
                finished += 1;
                let Ok(outcome) = joined else {
                    tally.transport_errors += 1; // the task panicked
                    conns -= 1;
                    continue;
                };
                match outcome.sender {
                    Some(s) if !s.is_closed() => idle.push_back(s),
                    _ => conns -= 1,
                }
                match outcome.result {
                    Ok(d) => {
                        if d.status == plan.expect {
                            tally.ok += 1;
                        } else {
                            tally.unexpected += 1;
                        }
                        if outcome.index == 0 {
                            tally.first = Some(d.latency);
                        }
                        if outcome.index >= plan.warm {
                            tally.latencies.push(d.latency);
                            tally.lags.push(d.lag);
                        }
                    }
                    Err(Failure::Connect) => tally.connect_errors += 1,
                    Err(Failure::Transport) => tally.transport_errors += 1,
                    Err(Failure::Timeout) => tally.timeouts += 1,
                }
            }
            next = rx.recv(), if !pacer_done => match next {
                Some(i) => {
                    let due = plan.due(start, i);
                    let ready = Instant::now().max(due);
                    if i >= plan.warm {
                        tally.pacer_lags.push(ready - due);
                    }
                    backlog.push_back((i, ready));
                }
                None => pacer_done = true,
            },
            () = &mut sleep => {
                tally.unfinished = plan.total - finished;
                tasks.abort_all();
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    drop(rx);
    // The pacer stops at its next send, at most one interval away.
    if pacer.join().is_err() {
        bail!("the pacer thread panicked");
    }
    Ok((tally, elapsed))
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

fn report(mut t: Tally, elapsed: Duration) -> bool {
    t.latencies.sort_unstable();
    t.lags.sort_unstable();
    t.pacer_lags.sort_unstable();
    let errors = t.errors();
    let sent = t.ok + t.unexpected + errors;
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        format!("{:.1}", sent as f64 / secs)
    } else {
        "0".to_owned()
    };
    let max = t.latencies.last().map_or(f64::NAN, Duration::as_secs_f64);
    println!(
        "PROBE sent={sent} ok={} unexpected={} errors={errors} rate={rate} p50_us={} p90_us={} p99_us={} max_us={} lag_p99_us={} pacer_lag_p99_us={} first_us={}",
        t.ok,
        t.unexpected,
        us(percentile(&t.latencies, 50.0)),
        us(percentile(&t.latencies, 90.0)),
        us(percentile(&t.latencies, 99.0)),
        us(max),
        us(percentile(&t.lags, 99.0)),
        us(percentile(&t.pacer_lags, 99.0)),
        us(t.first.map_or(f64::NAN, |d| d.as_secs_f64())),
    );
    if errors > 0 {
        eprintln!(
            "latency-probe: errors: {} connect, {} transport, {} timed out, {} unanswered when the time was up",
            t.connect_errors, t.transport_errors, t.timeouts, t.unfinished
        );
    }
    errors == 0 && t.unexpected == 0
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("latency-probe: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")
        .and_then(|rt| rt.block_on(async { run(plan(&args).await?).await }));
    match result {
        Ok((tally, elapsed)) => {
            if report(tally, elapsed) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("latency-probe: {e:#}");
            ExitCode::FAILURE
        }
    }
}
