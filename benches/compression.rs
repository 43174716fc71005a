//! The compression workload (W10 of issue 7): what the gateway's own compression costs in bytes
//! on the wire and in memory per stream, on the front-end Forge serves (Gradio's
//! `templates/frontend`: `index.html` and the JS/CSS under `assets/`).
//!
//! Three subcommands, run by `benches/compress.sh` (which starts the upstream and vastgate):
//!
//! - `memory`: a counting global allocator measures the heap of one stream of vastgate's own
//!   `gateway::compress::Compressed` body (gzip, at the shipped level and at levels 1-6) while
//!   it compresses the largest asset, fed in upstream-sized chunks each flushed as the gateway
//!   does: the peak, and what it keeps between chunks; the bytes and the CPU over the whole
//!   corpus; and the heap of the compressor each thread keeps for all its streams. `--explore`
//!   adds other encoder settings (same chunking and flushing, the `flate2` crate directly) to see
//!   what a change would buy.
//! - `page`: a page load over one keep-alive HTTP/1.1 connection, every asset fetched in turn,
//!   straight from the upstream (its own gzip, then identity) and through vastgate (with the
//!   browser's `gzip, deflate, br`, then `gzip` alone). Counts body bytes and bytes on the wire
//!   (headers and chunk framing included), decodes every body (gzip: exactly one member) and
//!   checks it against the file.
//! - `hold`: N downloads of one asset through the proxy, each stalled after the response headers
//!   (a 4 KiB receive buffer, then no reads), so every stream sits mid-compression; reads the
//!   proxy's RSS before and while they are held, then drains them.
//!
//! `cargo bench --bench compression` alone runs `memory` on the Gradio front-end of `.venv`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{header, Request, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use vastgate::gateway::compress::{Compressed, GZIP_LEVEL};
use vastgate::gateway::BoxError;

// ---------------------------------------------------------------------------------------------
// A counting allocator
// ---------------------------------------------------------------------------------------------

/// The system allocator, counting the bytes currently allocated and the most seen at once.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    CURRENT.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every call goes to `System` unchanged; the counters are only arithmetic on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most heap seen allocated between two chunks of a stream (`note_held`).
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Called between chunks, after the output went out: what the stream holds while it waits.
fn note_held() {
    HELD.fetch_max(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Runs `f`; returns the most heap it held at once beyond what was allocated before it started
/// (`peak`), and the most it held between chunks (`held`: the encoder's state while the stream
/// waits for the client).
fn peak_during(f: impl FnOnce() -> usize) -> (usize, usize) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    HELD.store(base, Ordering::Relaxed);
    f();
    (
        PEAK.load(Ordering::Relaxed).saturating_sub(base),
        HELD.load(Ordering::Relaxed).saturating_sub(base),
    )
}

/// CPU time of this process (all threads), in seconds.
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

#[derive(Parser, Debug)]
#[command(name = "compression")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, global = true, hide = true)]
    bench: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Peak heap of one compressing stream (vastgate's compress module) and CPU per MB.
    Memory {
        /// Gradio's `templates/frontend` [default: the one in ./.venv].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Upstream chunk size: each chunk is compressed and flushed on its own, as the gateway does.
        #[arg(long, default_value_t = 64 * 1024)]
        chunk: usize,
        /// Also try other encoder settings with the same chunking.
        #[arg(long)]
        explore: bool,
    },
    /// A page load straight from the upstream and through the gateway; bytes per configuration.
    Page {
        /// The upstream (Starlette with GZipMiddleware), `HOST:PORT`.
        #[arg(long)]
        upstream: SocketAddr,
        /// vastgate in front of it (a route with `drop_accept_encoding = true`), `HOST:PORT`.
        #[arg(long)]
        gateway: SocketAddr,
        /// Gradio's `templates/frontend`: the files the answers must decode to.
        #[arg(long)]
        dir: PathBuf,
        /// Write one line per configuration and asset here (TSV).
        #[arg(long)]
        out: Option<PathBuf>,
        /// vastgate's process id: its CPU time per page load is read from /proc.
        #[arg(long)]
        gateway_pid: Option<u32>,
        /// Page loads per configuration (bytes are those of the first; CPU is the mean).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// N downloads stalled mid-stream; the proxy's RSS growth per stream.
    Hold {
        /// The proxy, `HOST:PORT`.
        #[arg(long)]
        target: SocketAddr,
        /// The proxy's process id (its `VmRSS` is read from /proc).
        #[arg(long)]
        pid: u32,
        /// The asset to download.
        #[arg(long)]
        path: String,
        /// Concurrent downloads.
        #[arg(long, default_value_t = 32)]
        streams: usize,
        /// The client's Accept-Encoding; none when absent.
        #[arg(long)]
        accept_encoding: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => match default_frontend() {
            Some(dir) => memory(&dir, 64 * 1024, false),
            None => {
                println!("compression: no Gradio front-end in .venv; nothing to measure");
                Ok(())
            }
        },
        Some(Command::Memory {
            dir,
            chunk,
            explore,
        }) => match dir.or_else(default_frontend) {
            Some(dir) => memory(&dir, chunk, explore),
            None => Err("no --dir and no Gradio front-end in .venv".into()),
        },
        Some(Command::Page {
            upstream,
            gateway,
            dir,
            out,
            gateway_pid,
            repeat,
        }) => runtime().block_on(page(
            upstream,
            gateway,
            &dir,
            out.as_deref(),
            gateway_pid,
            repeat.max(1),
        )),
        Some(Command::Hold {
            target,
            pid,
            path,
            streams,
            accept_encoding,
        }) => runtime().block_on(hold(
            target,
            pid,
            &path,
            streams,
            accept_encoding.as_deref(),
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compression: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

// ---------------------------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------------------------

/// Gradio's front-end in the project's virtual environment, if there is one.
fn default_frontend() -> Option<PathBuf> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages/gradio/templates/frontend"))
        .find(|p| p.join("index.html").is_file())
}

/// One file a browser loads: its URL path and contents.
struct Asset {
    path: String,
    data: Bytes,
}

/// `index.html` at `/`, then every `assets/*.js` and `assets/*.css` (what the page and its
/// imports pull in; fonts and images are compressed by neither side and left out).
fn corpus(dir: &Path) -> Result<Vec<Asset>, BoxError> {
    let mut assets = vec![Asset {
        path: "/".into(),
        data: std::fs::read(dir.join("index.html"))?.into(),
    }];
    let mut names: Vec<String> = std::fs::read_dir(dir.join("assets"))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".js") || n.ends_with(".css"))
        .collect();
    names.sort();
    for name in names {
        let data = std::fs::read(dir.join("assets").join(&name))?;
        assets.push(Asset {
            path: format!("/assets/{name}"),
            data: data.into(),
        });
    }
    if assets.len() < 2 {
        return Err(format!("{}: no assets/*.js or *.css", dir.display()).into());
    }
    Ok(assets)
}

fn kib(bytes: usize) -> f64 {
    bytes as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// memory
// ---------------------------------------------------------------------------------------------

/// Streams `data` through vastgate's `Compressed` (gzip at `level`) in `chunk`-sized frames;
/// returns the bytes it produced.
fn vastgate_stream(rt: &tokio::runtime::Runtime, data: &Bytes, chunk: usize, level: u32) -> usize {
    // Slices of `data`, made as they are polled: nothing allocated per chunk on the input side.
    let data = data.clone();
    let frames = (0..data.len()).step_by(chunk).map(move |at| {
        Ok::<_, BoxError>(Frame::data(data.slice(at..(at + chunk).min(data.len()))))
    });
    let mut body =
        Compressed::with_level(StreamBody::new(futures_util::stream::iter(frames)), level);
    rt.block_on(async {
        let mut out = 0;
        while let Some(frame) = body.frame().await {
            out += frame
                .expect("compression")
                .into_data()
                .map_or(0, |d| d.len());
            note_held();
        }
        out
    })
}

/// An encoder setting to compare, driven as the gateway drives its encoder: write a chunk,
/// flush, take what came out.
#[derive(Clone, Copy)]
enum Setting {
    /// One gzip encoder for the whole stream, flushed after every chunk: the gateway's design
    /// before issue 7's W10 (it held the encoder, some 300 KiB, between chunks).
    Gzip { level: u32 },
    /// Each chunk deflated by a fresh compressor with no window: nothing but a CRC held between
    /// chunks, and no match across them (what the gateway's 32 KiB window buys).
    GzipPerChunk { level: u32 },
}

impl Setting {
    fn label(self) -> String {
        match self {
            Setting::Gzip { level } => format!("gzip-{level}, one encoder"),
            Setting::GzipPerChunk { level } => format!("gzip-{level}, per chunk, no window"),
        }
    }

    fn stream(self, data: &[u8], chunk: usize) -> usize {
        match self {
            Setting::Gzip { level } => {
                let mut w =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                let mut produced = 0;
                for piece in data.chunks(chunk) {
                    w.write_all(piece).expect("compression");
                    w.flush().expect("compression");
                    produced += std::mem::take(w.get_mut()).len();
                    note_held();
                }
                produced + w.finish().expect("compression").len()
            }
            Setting::GzipPerChunk { level } => {
                // Header 10, the final empty block 2, CRC-32 and length 8.
                let mut produced = 10 + 2 + 8;
                for piece in data.chunks(chunk) {
                    let mut c = flate2::Compress::new(flate2::Compression::new(level), false);
                    let mut out = Vec::with_capacity(piece.len() + piece.len() / 8 + 1024);
                    c.compress_vec(piece, &mut out, flate2::FlushCompress::Sync)
                        .expect("compression");
                    assert_eq!(c.total_in() as usize, piece.len(), "room enough");
                    produced += out.len();
                    drop((c, out));
                    note_held();
                }
                produced
            }
        }
    }
}

/// The heap one new thread keeps after compressing one stream: the compressor (and its output
/// buffer) the thread lends to all its streams, one chunk at a time.
fn thread_compressor(data: &Bytes, chunk: usize, level: u32) -> (usize, usize) {
    let data = data.clone();
    std::thread::spawn(move || {
        let rt = runtime();
        let base = CURRENT.load(Ordering::Relaxed);
        let (peak, _) = peak_during(|| vastgate_stream(&rt, &data, chunk, level));
        let kept = CURRENT.load(Ordering::Relaxed).saturating_sub(base);
        (peak, kept)
    })
    .join()
    .expect("the measuring thread")
}

fn memory(dir: &Path, chunk: usize, explore: bool) -> Result<(), BoxError> {
    let assets = corpus(dir)?;
    let total: usize = assets.iter().map(|a| a.data.len()).sum();
    let largest = assets
        .iter()
        .max_by_key(|a| a.data.len())
        .expect("corpus() returns assets");
    // The reference: each asset gzipped whole at level 9 (Starlette's GZipMiddleware default;
    // flate2's zlib-rs rather than Python's zlib, so a percent or so off `page`'s figure).
    let gzip9: usize = assets
        .iter()
        .map(|a| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(&a.data).expect("compression");
            e.finish().expect("compression").len()
        })
        .sum();
    println!(
        "corpus: {} files, {:.0} KiB ({}); each gzipped whole at level 9 (zlib-rs): {:.0} KiB",
        assets.len(),
        kib(total),
        dir.display(),
        kib(gzip9)
    );
    println!(
        "largest: {} ({:.0} KiB); fed in {chunk}-byte chunks, each compressed and flushed",
        largest.path,
        kib(largest.data.len())
    );
    println!();
    println!(
        "{:<28} {:>9} {:>9} {:>16} {:>10} {:>8} {:>8}",
        "encoder", "peak KiB", "held KiB", "corpus out KiB", "÷ gzip-9", "CPU ms", "MB/s in"
    );
    let rt = runtime();
    let row = |label: &str, (peak, held): (usize, usize), out: usize, cpu: f64| {
        println!(
            "{:<28} {:>9.1} {:>9.1} {:>16.0} {:>10.3} {:>8.0} {:>8.1}",
            label,
            kib(peak),
            kib(held),
            kib(out),
            out as f64 / gzip9 as f64,
            cpu * 1000.0,
            total as f64 / 1e6 / cpu
        );
    };
    // The shipped level first, then levels 1-6 to choose from.
    let mut levels = vec![GZIP_LEVEL];
    levels.extend((1..=6).filter(|&l| l != GZIP_LEVEL));
    for level in levels {
        // Once first: the thread's compressor (made on first use, at this level) and its output
        // buffer (grown to a whole piece) exist before the measurement, as in a gateway that
        // has served a response; they are shared by all the thread's streams, reported below.
        vastgate_stream(&rt, &largest.data, chunk, level);
        let peak = peak_during(|| vastgate_stream(&rt, &largest.data, chunk, level));
        let start = cpu_seconds();
        let out: usize = assets
            .iter()
            .map(|a| vastgate_stream(&rt, &a.data, chunk, level))
            .sum();
        let label = if level == GZIP_LEVEL {
            format!("vastgate gzip-{level} (shipped)")
        } else {
            format!("vastgate gzip-{level}")
        };
        row(&label, peak, out, cpu_seconds() - start);
    }
    let (peak, kept) = thread_compressor(&largest.data, chunk, GZIP_LEVEL);
    println!(
        "vastgate per thread (not per stream): the compressor it lends, {:.1} KiB kept; {:.1} KiB peak with its first stream",
        kib(kept),
        kib(peak)
    );
    if explore {
        let settings = [
            Setting::Gzip { level: 1 },
            Setting::Gzip { level: 5 },
            Setting::Gzip { level: 6 },
            Setting::Gzip { level: 9 },
            Setting::GzipPerChunk { level: GZIP_LEVEL },
        ];
        for s in settings {
            s.stream(&assets[0].data, chunk);
            let peak = peak_during(|| s.stream(&largest.data, chunk));
            let start = cpu_seconds();
            let out: usize = assets.iter().map(|a| s.stream(&a.data, chunk)).sum();
            row(&s.label(), peak, out, cpu_seconds() - start);
        }
    }
    println!();
    println!("peak: the most heap one stream had allocated at once (its state, the output frame");
    println!("in flight); held: the most it kept between chunks, while it waits for the client");
    println!("(vastgate: the stream's 32 KiB window; the compressor belongs to the thread).");
    println!("The W10 target is <= 256 KiB per stream.");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// page
// ---------------------------------------------------------------------------------------------

/// A TCP stream that counts the bytes read from it.
struct Counted {
    inner: TcpStream,
    read: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let got = buf.filled().len() - before;
        self.read.fetch_add(got as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One answer of a page load.
struct Fetched {
    coding: String,
    body: usize,
    wire: usize,
    /// The Accept-Encoding the upstream saw (its `x-upstream-accept-encoding` header), if it says.
    upstream_saw: Option<String>,
}

fn decode(coding: &str, body: &[u8]) -> Result<Vec<u8>, BoxError> {
    let mut out = Vec::new();
    match coding {
        "" | "identity" => out.extend_from_slice(body),
        "gzip" => {
            // Exactly one member, nothing after it.
            let mut decoder = flate2::bufread::GzDecoder::new(body);
            decoder.read_to_end(&mut out)?;
            if !decoder.into_inner().is_empty() {
                return Err("bytes after the gzip member".into());
            }
        }
        other => return Err(format!("unexpected Content-Encoding {other:?}").into()),
    }
    Ok(out)
}

/// Fetches every asset in turn over one keep-alive connection.
async fn page_load(
    addr: SocketAddr,
    accept_encoding: Option<&str>,
    assets: &[Asset],
) -> Result<Vec<Fetched>, BoxError> {
    let read = Arc::new(AtomicU64::new(0));
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let io = Counted {
        inner: stream,
        read: read.clone(),
    };
    let (mut sender, conn) = http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut fetched = Vec::with_capacity(assets.len());
    for asset in assets {
        sender.ready().await?;
        let mut request = Request::get(asset.path.as_str()).header(header::HOST, addr.to_string());
        if let Some(ae) = accept_encoding {
            request = request.header(header::ACCEPT_ENCODING, ae);
        }
        let before = read.load(Ordering::Relaxed);
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new())?)
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        let wire = (read.load(Ordering::Relaxed) - before) as usize;
        if status != StatusCode::OK {
            return Err(format!("{addr}{}: {status}", asset.path).into());
        }
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let coding = text("content-encoding").unwrap_or_default();
        if decode(&coding, &body)? != asset.data {
            return Err(format!(
                "{addr}{}: the {coding:?} body does not decode to the file",
                asset.path
            )
            .into());
        }
        fetched.push(Fetched {
            coding,
            body: body.len(),
            wire,
            upstream_saw: text("x-upstream-accept-encoding"),
        });
    }
    Ok(fetched)
}

/// utime + stime of a process, in seconds (from /proc/PID/stat).
fn process_cpu_seconds(pid: u32) -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // Fields 14 and 15 of stat(5), counted here from field 3.
    Ok((ticks(11) + ticks(12)) as f64 / hz)
}

async fn page(
    upstream: SocketAddr,
    gateway: SocketAddr,
    dir: &Path,
    out: Option<&Path>,
    gateway_pid: Option<u32>,
    repeat: usize,
) -> Result<(), BoxError> {
    let assets = corpus(dir)?;
    let identity: usize = assets.iter().map(|a| a.data.len()).sum();
    const BROWSER: &str = "gzip, deflate, br";
    // The upstream's own gzip first: every ratio is to it.
    let configs: [(&str, SocketAddr, Option<&str>); 5] = [
        ("upstream, its own gzip", upstream, Some(BROWSER)),
        ("upstream, identity", upstream, None),
        ("vastgate, gzip, deflate, br", gateway, Some(BROWSER)),
        ("vastgate, gzip", gateway, Some("gzip")),
        ("vastgate, identity", gateway, None),
    ];
    // (name, answers, vastgate's CPU seconds per page load)
    let mut results: Vec<(&str, Vec<Fetched>, Option<f64>)> = Vec::new();
    for (name, addr, ae) in configs {
        let through_gateway = addr == gateway;
        let cpu_before = match gateway_pid.filter(|_| through_gateway) {
            Some(pid) => Some(process_cpu_seconds(pid)?),
            None => None,
        };
        let fetched = page_load(addr, ae, &assets).await?;
        for _ in 1..if through_gateway { repeat } else { 1 } {
            page_load(addr, ae, &assets).await?;
        }
        let cpu = match (gateway_pid, cpu_before) {
            (Some(pid), Some(before)) => Some((process_cpu_seconds(pid)? - before) / repeat as f64),
            _ => None,
        };
        if through_gateway {
            if let Some(saw) = fetched
                .iter()
                .find_map(|f| f.upstream_saw.as_deref().filter(|s| *s != "-"))
            {
                return Err(format!(
                    "{name}: the upstream saw Accept-Encoding {saw:?}; the route must drop it"
                )
                .into());
            }
        }
        results.push((name, fetched, cpu));
    }
    if let Some(path) = out {
        let mut tsv = String::from("config\tpath\tidentity\tcoding\tbody\twire\n");
        for (name, fetched, _) in &results {
            for (a, f) in assets.iter().zip(fetched) {
                tsv.push_str(&format!(
                    "{name}\t{}\t{}\t{}\t{}\t{}\n",
                    a.path,
                    a.data.len(),
                    f.coding,
                    f.body,
                    f.wire
                ));
            }
        }
        std::fs::write(path, tsv)?;
    }

    let body = |k: usize| results[k].1.iter().map(|f| f.body).sum::<usize>();
    let wire = |k: usize| results[k].1.iter().map(|f| f.wire).sum::<usize>();
    let (ref_body, ref_wire) = (body(0), wire(0));
    println!(
        "page load: {} responses (index.html + assets/*.js, *.css), {:.0} KiB as files; \
         vastgate's CPU is the mean of {repeat} loads",
        assets.len(),
        kib(identity)
    );
    println!();
    println!(
        "{:<30} {:>12} {:>11} {:>11} {:>10} {:>10} {:>12}",
        "configuration",
        "encoded",
        "body KiB",
        "wire KiB",
        "body ÷ up",
        "wire ÷ up",
        "vastgate CPU"
    );
    for (k, (name, fetched, cpu)) in results.iter().enumerate() {
        let mut codings: Vec<&str> = fetched
            .iter()
            .map(|f| f.coding.as_str())
            .filter(|c| !c.is_empty())
            .collect();
        codings.sort_unstable();
        codings.dedup();
        let encoded = format!(
            "{} {}",
            fetched.iter().filter(|f| !f.coding.is_empty()).count(),
            if codings.is_empty() {
                "-".into()
            } else {
                codings.join("+")
            }
        );
        println!(
            "{:<30} {:>12} {:>11.1} {:>11.1} {:>10.3} {:>10.3} {:>12}",
            name,
            encoded,
            kib(body(k)),
            kib(wire(k)),
            body(k) as f64 / ref_body as f64,
            wire(k) as f64 / ref_wire as f64,
            cpu.map_or("-".into(), |c| format!("{:.0} ms", c * 1000.0))
        );
    }
    println!();
    println!("largest assets (body bytes, and the ratio to the upstream's gzip):");
    let mut order: Vec<usize> = (0..assets.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(assets[i].data.len()));
    for &i in order.iter().take(5) {
        let up = results[0].1[i].body as f64;
        let gz = results[3].1[i].body;
        println!(
            "  {:<44} file {:>8}  upstream gzip {:>8}  vastgate gzip {:>8} ({:.3})",
            assets[i].path,
            assets[i].data.len(),
            results[0].1[i].body,
            gz,
            gz as f64 / up
        );
    }
    let verdict = |r: f64| if r <= 1.1 { "met" } else { "MISSED" };
    let ratio = |k: usize| {
        (
            body(k) as f64 / ref_body as f64,
            wire(k) as f64 / ref_wire as f64,
        )
    };
    let ((browser_body, browser_wire), (gz_body, gz_wire)) = (ratio(2), ratio(3));
    println!();
    println!(
        "W10 bytes (<= 1.1x the upstream's own gzip): browser's Accept-Encoding {browser_body:.3}x body, \
         {browser_wire:.3}x wire [{}]; gzip alone {gz_body:.3}x body, {gz_wire:.3}x wire [{}]",
        verdict(browser_body.max(browser_wire)),
        verdict(gz_body.max(gz_wire))
    );
    let cpu = |k: usize| {
        results[k]
            .2
            .map_or("-".into(), |c| format!("{:.1}", c * 1000.0))
    };
    println!(
        "RESULT browser_body={browser_body:.4} browser_wire={browser_wire:.4} gzip_body={gz_body:.4} \
         gzip_wire={gz_wire:.4} upstream_body={ref_body} upstream_wire={ref_wire} cpu_ms_browser={} \
         cpu_ms_gzip={} cpu_ms_identity={}",
        cpu(2),
        cpu(3),
        cpu(4)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// hold
// ---------------------------------------------------------------------------------------------

fn rss_kib(pid: u32) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("/proc/{pid}/status has no VmRSS").into())
}

/// Sends a GET and reads up to the end of the response headers; the rest is left in flight.
async fn open_stalled(
    target: SocketAddr,
    path: &str,
    ae: Option<&str>,
) -> Result<TcpStream, BoxError> {
    let socket = TcpSocket::new_v4()?;
    // A small window: the proxy can push little before it has to wait for us.
    socket.set_recv_buffer_size(4096)?;
    let mut stream = socket.connect(target).await?;
    let ae = ae
        .map(|v| format!("Accept-Encoding: {v}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {target}\r\n{ae}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err("the proxy closed before the response headers".into());
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(format!(
            "{path}: {}",
            String::from_utf8_lossy(&head).lines().next().unwrap_or("")
        )
        .into());
    }
    Ok(stream)
}

async fn hold(
    target: SocketAddr,
    pid: u32,
    path: &str,
    streams: usize,
    ae: Option<&str>,
) -> Result<(), BoxError> {
    // Warm up with one small answer (index.html at `/`), so the upstream pool and the runtime
    // exist before the baseline; not whole downloads of the asset, whose freed buffers the
    // allocator would keep and hand to the held streams, hiding their cost.
    let mut s = open_stalled(target, "/", ae).await?;
    s.read_to_end(&mut Vec::new()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid)?;
    let mut held = Vec::with_capacity(streams);
    for _ in 0..streams {
        held.push(open_stalled(target, path, ae).await?);
    }
    // Let every stream run into its full window, then settle.
    let mut last = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_kib(pid)?;
        if now == last {
            break;
        }
        last = now;
    }
    let during = rss_kib(pid)?;
    let mut tasks = Vec::new();
    for mut s in held {
        tasks.push(tokio::spawn(async move {
            let mut sink = Vec::new();
            s.read_to_end(&mut sink).await.map(|_| sink.len())
        }));
    }
    let mut received = 0;
    for t in tasks {
        received += t.await??;
    }
    let per = (during as f64 - before as f64) / streams as f64;
    println!(
        "{streams} stalled downloads of {path} (Accept-Encoding: {}): RSS {before} KiB before, {during} KiB held, \
         {per:.1} KiB per stream; {:.0} KiB each after draining",
        ae.unwrap_or("none"),
        received as f64 / 1024.0 / streams as f64
    );
    println!(
        "RESULT streams={streams} before_kib={before} held_kib={during} per_stream_kib={per:.1}"
    );
    Ok(())
}
