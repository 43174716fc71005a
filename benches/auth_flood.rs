//! The wrong-password flood of issue 3 (workload W8 of issue 7): can a legitimate user still get
//! in while someone hammers the login?
//!
//! `--connections` flood connections each send, back to back on a keep-alive connection, requests
//! with the right user name and a password never used before (so no cache can answer them and
//! every one costs the target a hash). Meanwhile one legitimate client, whose correct credentials
//! were accepted once before the flood (a proxy with a cache has them cached), sends sequential
//! requests on its own connection, runtime and thread, and records each one's latency.
//!
//! `wrk` cannot bind client addresses, hence this program: with `--sources 50` the flood
//! connections come from 127.0.0.2 … 127.0.0.51 (Linux answers the whole of 127/8 on loopback), so
//! a per-address failure limiter alone cannot absorb it.
//!
//! Run by `benches/compare.sh`; by hand:
//! `cargo bench --bench auth_flood -- --target 127.0.0.1:8000 --user bench --password secret`.
//! The last line of output is `RESULT key=value ...` for scripts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use clap::Parser;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

/// Floods an HTTP Basic-auth endpoint with unique wrong passwords while one legitimate client
/// measures its latency.
#[derive(Parser, Debug)]
#[command(name = "auth_flood")]
struct Args {
    /// The proxy under test, `HOST:PORT`. Without it (plain `cargo bench`) nothing is run.
    #[arg(long, requires_all = ["user", "password"])]
    target: Option<SocketAddr>,
    /// The request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// A user that exists in the htpasswd file (the flood uses it too: unknown users cost nginx
    /// no hash, so they would flatter it).
    #[arg(long, default_value = "", hide_default_value = true)]
    user: String,
    /// That user's correct password (the legitimate client's).
    #[arg(long, default_value = "", hide_default_value = true)]
    password: String,
    /// Flood connections.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Source addresses of the flood: 1 (127.0.0.1) or N (127.0.0.2 … 127.0.0.N+1, connection
    /// i from address i mod N).
    #[arg(long, default_value_t = 1)]
    sources: u8,
    /// How long the flood lasts; the legitimate client measures all of it but the first
    /// `--settle`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// How long the flood runs before the legitimate client starts measuring.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    settle: Duration,
    /// A request slower than this is counted as a timeout (and its connection replaced).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    /// `--target`, which `main` checked is present.
    fn addr(&self) -> SocketAddr {
        self.target.expect("main returns early without --target")
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 10s or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("`{text}`: the unit must be ms, s or m")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// What the flood got back, by kind.
#[derive(Default)]
struct FloodCounts {
    ok: AtomicU64,
    unauthorized: AtomicU64,
    too_many: AtomicU64,
    unavailable: AtomicU64,
    other: AtomicU64,
    /// Connections that failed to open or broke mid-request.
    errors: AtomicU64,
    timeouts: AtomicU64,
}

impl FloodCounts {
    fn record(&self, status: StatusCode) {
        let counter = match status.as_u16() {
            200..=299 => &self.ok,
            401 => &self.unauthorized,
            429 => &self.too_many,
            503 => &self.unavailable,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One keep-alive HTTP/1.1 connection from a chosen source address.
struct Connection {
    sender: SendRequest<Empty<Bytes>>,
}

impl Connection {
    async fn open(target: SocketAddr, source: Option<IpAddr>) -> std::io::Result<Connection> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(target).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection { sender })
    }

    /// Sends one GET and reads the whole answer; `Err` means the connection is no longer usable.
    async fn get(
        &mut self,
        target: SocketAddr,
        path: &str,
        authorization: &str,
    ) -> Result<StatusCode, hyper::Error> {
        self.sender.ready().await?;
        let request = Request::get(path)
            .header(header::HOST, target.to_string())
            .header(header::AUTHORIZATION, authorization)
            .body(Empty::new())
            .expect("a GET with valid headers");
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        Ok(status)
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// One flood connection: unique wrong passwords until `deadline`, reconnecting when the target
/// closes the connection.
async fn flood(
    args: Arc<Args>,
    id: usize,
    source: Option<IpAddr>,
    nonce: u64,
    deadline: Instant,
    counts: Arc<FloodCounts>,
) {
    let mut sequence = 0u64;
    while Instant::now() < deadline {
        let mut conn = match Connection::open(args.addr(), source).await {
            Ok(conn) => conn,
            Err(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while Instant::now() < deadline {
            sequence += 1;
            let authorization = basic(&args.user, &format!("wrong-{nonce:x}-{id}-{sequence}"));
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(
                args.timeout.min(remaining + Duration::from_secs(1)),
                conn.get(args.addr(), &args.path, &authorization),
            )
            .await
            {
                Ok(Ok(status)) => counts.record(status),
                Ok(Err(_)) => {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(_) => {
                    // A request cut by the end of the run is not a timeout.
                    if Instant::now() < deadline {
                        counts.timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
            }
        }
    }
}

/// What the legitimate client saw.
struct LegitReport {
    /// Latency of every answered request, in seconds.
    latencies: Vec<f64>,
    /// Requests answered with anything but 200.
    refused: u64,
    /// Requests that failed or timed out (their time is in `latencies` too).
    failed: u64,
}

/// The legitimate client: sequential requests with the correct credentials, measured from
/// `start` to `deadline`, on its own single-threaded runtime so the flood's tasks cannot delay
/// its clock.
fn legit_client(args: Arc<Args>, start: Instant, deadline: Instant) -> LegitReport {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let authorization = basic(&args.user, &args.password);
        let mut report = LegitReport {
            latencies: Vec::new(),
            refused: 0,
            failed: 0,
        };
        tokio::time::sleep_until(start.into()).await;
        let mut conn = None;
        while Instant::now() < deadline {
            let t0 = Instant::now();
            if conn.is_none() {
                conn = Connection::open(args.addr(), None).await.ok();
            }
            let outcome = match conn.as_mut() {
                Some(c) => tokio::time::timeout(
                    args.timeout,
                    c.get(args.addr(), &args.path, &authorization),
                )
                .await
                .ok()
                .and_then(Result::ok),
                None => None,
            };
            report.latencies.push(t0.elapsed().as_secs_f64());
            match outcome {
                Some(StatusCode::OK) => {}
                Some(_) => report.refused += 1,
                None => {
                    report.failed += 1;
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        report
    })
}

/// Nearest-rank percentile of sorted `values`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> ExitCode {
    let args = Arc::new(Args::parse());
    if args.target.is_none() {
        // Plain `cargo bench` runs every bench target; this one needs a proxy to aim at.
        println!("auth_flood: skipped (needs --target HOST:PORT; benches/compare.sh runs it)");
        return ExitCode::SUCCESS;
    }
    if args.sources == 0 || usize::from(args.sources) > 250 {
        eprintln!("auth_flood: --sources must be between 1 and 250");
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");

    // The legitimate credentials must work (and are now cached by a proxy that caches).
    let warm = runtime.block_on(async {
        let mut conn = Connection::open(args.addr(), None).await?;
        conn.get(args.addr(), &args.path, &basic(&args.user, &args.password))
            .await
            .map_err(std::io::Error::other)
    });
    match warm {
        Ok(StatusCode::OK) => {}
        Ok(status) => {
            eprintln!(
                "auth_flood: {} answered {status} to the correct credentials; check --user/--password",
                args.addr()
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("auth_flood: cannot reach {}: {e}", args.addr());
            return ExitCode::FAILURE;
        }
    }

    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let counts = Arc::new(FloodCounts::default());
    let begin = Instant::now();
    let deadline = begin + args.duration;
    let measure_from = begin + args.settle.min(args.duration);

    let legit = {
        let args = args.clone();
        std::thread::spawn(move || legit_client(args, measure_from, deadline))
    };
    runtime.block_on(async {
        let mut tasks = Vec::with_capacity(args.connections);
        for id in 0..args.connections {
            let source = (args.sources > 1).then(|| {
                let host = 2 + (id % usize::from(args.sources)) as u8;
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, host))
            });
            tasks.push(tokio::spawn(flood(
                args.clone(),
                id,
                source,
                nonce,
                deadline,
                counts.clone(),
            )));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
    let flood_secs = begin.elapsed().as_secs_f64();
    let mut report = legit.join().expect("the legitimate client thread");
    report.latencies.sort_by(f64::total_cmp);
    // Whatever the flood left running (connections cut at the deadline) is dropped here.
    runtime.shutdown_timeout(Duration::from_millis(100));

    let ms = |s: f64| s * 1000.0;
    let lat = &report.latencies;
    let (p50, p99, max) = (
        ms(percentile(lat, 50.0)),
        ms(percentile(lat, 99.0)),
        ms(lat.last().copied().unwrap_or(f64::NAN)),
    );
    let c = &*counts;
    let get = FloodCounts::get;
    let total =
        get(&c.ok) + get(&c.unauthorized) + get(&c.too_many) + get(&c.unavailable) + get(&c.other);
    println!(
        "legitimate client: {} requests, p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms, \
         {} refused, {} failed",
        lat.len(),
        report.refused,
        report.failed
    );
    println!(
        "flood ({} connections from {} address{}): {total} answers in {flood_secs:.1} s \
         ({:.0}/s): 401 {}, 429 {}, 503 {}, 2xx {}, other {}; {} connection errors, {} timeouts",
        args.connections,
        args.sources,
        if args.sources == 1 { "" } else { "es" },
        total as f64 / flood_secs,
        get(&c.unauthorized),
        get(&c.too_many),
        get(&c.unavailable),
        get(&c.ok),
        get(&c.other),
        get(&c.errors),
        get(&c.timeouts),
    );
    println!(
        "RESULT legit_n={} legit_p50_ms={p50:.3} legit_p99_ms={p99:.3} legit_max_ms={max:.3} \
         legit_refused={} legit_failed={} flood_total={total} flood_401={} flood_429={} \
         flood_503={} flood_2xx={} flood_other={} flood_errors={} flood_timeouts={}",
        lat.len(),
        report.refused,
        report.failed,
        get(&c.unauthorized),
        get(&c.too_many),
        get(&c.unavailable),
        get(&c.ok),
        get(&c.other),
        get(&c.errors),
        get(&c.timeouts),
    );
    if get(&c.ok) > 0 {
        eprintln!("auth_flood: the target let a wrong password in");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
