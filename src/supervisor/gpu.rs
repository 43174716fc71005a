//! GPU detection through `nvidia-smi`: which GPUs, how much memory, which driver and CUDA.
//!
//! `nvidia-smi` can hang (a wedged driver), so it always runs under a timeout, through the
//! reaper, and never twice at once: a run that timed out keeps the detector busy until that
//! process has actually been reaped (one stuck in the driver may never die; then detection
//! reports so instead of piling up more stuck processes). No GPU, no driver and no `nvidia-smi`
//! are reports, never errors: everything that does not need the GPU carries on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::reaper::{ExitStatus, Reaper};
use super::spawn::{run_captured, Launch, RunError};

/// The fields asked of `nvidia-smi --query-gpu`, in the order [`parse_query`] reads them.
pub const QUERY_FIELDS: &str =
    "index,name,uuid,memory.total,memory.used,utilization.gpu,driver_version";

/// One GPU as `nvidia-smi` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub memory_total_mib: Option<u64>,
    pub memory_used_mib: Option<u64>,
    pub utilization_percent: Option<u32>,
}

/// What the last detection found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum GpuReport {
    /// Not asked yet.
    Unknown,
    Present {
        gpus: Vec<Gpu>,
        driver_version: String,
        cuda_version: Option<String>,
    },
    /// No usable GPU, and why ("nvidia-smi not found", "No devices were found", …).
    Absent { reason: String },
}

impl GpuReport {
    pub fn is_present(&self) -> bool {
        matches!(self, GpuReport::Present { .. })
    }

    /// One line for people: "1 × NVIDIA H200 (143771 MiB), driver 550.127.05, CUDA 12.4".
    pub fn summary(&self) -> String {
        match self {
            GpuReport::Unknown => "GPU: not checked yet".into(),
            GpuReport::Absent { reason } => format!("no GPU: {reason}"),
            GpuReport::Present {
                gpus,
                driver_version,
                cuda_version,
            } => {
                let mut kinds: BTreeMap<(&str, Option<u64>), usize> = BTreeMap::new();
                for g in gpus {
                    *kinds
                        .entry((g.name.as_str(), g.memory_total_mib))
                        .or_default() += 1;
                }
                let list: Vec<String> = kinds
                    .iter()
                    .map(|((name, mem), n)| match mem {
                        Some(m) => format!("{n} × {name} ({m} MiB)"),
                        None => format!("{n} × {name}"),
                    })
                    .collect();
                let cuda = cuda_version
                    .as_deref()
                    .map(|c| format!(", CUDA {c}"))
                    .unwrap_or_default();
                format!("{}, driver {driver_version}{cuda}", list.join(", "))
            }
        }
    }
}

/// Parses the CSV of `nvidia-smi --query-gpu=QUERY_FIELDS --format=csv,noheader,nounits`.
/// Returns the GPUs and the driver version; `[N/A]`-style values become `None`.
pub fn parse_query(text: &str) -> Result<(Vec<Gpu>, String), String> {
    let mut gpus = Vec::new();
    let mut driver = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 7 {
            return Err(format!("unexpected nvidia-smi output: {line}"));
        }
        let number = |s: &str| s.parse::<u64>().ok();
        let index = fields[0]
            .parse()
            .map_err(|_| format!("unexpected nvidia-smi output: {line}"))?;
        gpus.push(Gpu {
            index,
            name: fields[1].to_string(),
            uuid: fields[2].to_string(),
            memory_total_mib: number(fields[3]),
            memory_used_mib: number(fields[4]),
            utilization_percent: fields[5].parse().ok(),
        });
        driver = fields[6].to_string();
    }
    Ok((gpus, driver))
}

/// The "CUDA Version: 12.4" of plain `nvidia-smi`'s banner.
pub fn parse_cuda_version(banner: &str) -> Option<String> {
    let at = banner.find("CUDA Version:")?;
    let version = banner[at + "CUDA Version:".len()..]
        .split_whitespace()
        .next()?
        .trim_end_matches('|');
    (!version.is_empty()).then(|| version.to_string())
}

/// The first line worth showing of a failed `nvidia-smi`.
fn failure_line(output: &str, status: ExitStatus) -> String {
    output
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("nvidia-smi failed ({status:?})"))
}

/// Runs `nvidia-smi`, one at a time, under a timeout.
pub struct GpuDetector {
    command: String,
    timeout: Duration,
    reaper: Arc<Reaper>,
    env: BTreeMap<String, String>,
    busy: Arc<tokio::sync::Mutex<()>>,
    stuck: Arc<AtomicBool>,
}

impl GpuDetector {
    pub fn new(
        command: &str,
        timeout: Duration,
        reaper: Arc<Reaper>,
        env: BTreeMap<String, String>,
    ) -> GpuDetector {
        GpuDetector {
            command: command.to_string(),
            timeout,
            reaper,
            env,
            busy: Arc::new(tokio::sync::Mutex::new(())),
            stuck: Arc::new(AtomicBool::new(false)),
        }
    }

    pub async fn detect(&self) -> GpuReport {
        if self.stuck.load(Ordering::Acquire) {
            return GpuReport::Absent {
                reason: format!("{} is hung (an earlier run has not ended)", self.command),
            };
        }
        let guard = self.busy.clone().lock_owned().await;
        let query = self
            .run(&[
                format!("--query-gpu={QUERY_FIELDS}"),
                "--format=csv,noheader,nounits".into(),
            ])
            .await;
        let captured = match query {
            Ok(c) => c,
            Err(RunError::Spawn(e)) => {
                let reason = if e.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "{} not found (no NVIDIA driver in this container)",
                        self.command
                    )
                } else {
                    format!("cannot run {}: {e}", self.command)
                };
                return GpuReport::Absent { reason };
            }
            Err(RunError::Timeout(exit)) => {
                self.stuck.store(true, Ordering::Release);
                let stuck = self.stuck.clone();
                tokio::spawn(async move {
                    let _ = exit.await;
                    stuck.store(false, Ordering::Release);
                    drop(guard);
                });
                return GpuReport::Absent {
                    reason: format!(
                        "{} did not answer within {:?} and was killed",
                        self.command, self.timeout
                    ),
                };
            }
        };
        if captured.status != ExitStatus::Code(0) {
            return GpuReport::Absent {
                reason: failure_line(&captured.output, captured.status),
            };
        }
        let (gpus, driver_version) = match parse_query(&captured.output) {
            Ok(parsed) => parsed,
            Err(reason) => return GpuReport::Absent { reason },
        };
        if gpus.is_empty() {
            return GpuReport::Absent {
                reason: "nvidia-smi lists no GPU".into(),
            };
        }
        let cuda_version = match self.run(&[]).await {
            Ok(c) => parse_cuda_version(&c.output),
            Err(_) => None,
        };
        drop(guard);
        GpuReport::Present {
            gpus,
            driver_version,
            cuda_version,
        }
    }

    async fn run(&self, args: &[String]) -> Result<super::spawn::Captured, RunError> {
        let mut argv = vec![self.command.clone()];
        argv.extend_from_slice(args);
        let launch = Launch {
            argv,
            cwd: None,
            env: self.env.clone(),
            account: None,
        };
        run_captured(&self.reaper, &launch, self.timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/nvidia-smi/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn one_h200_parses_with_driver_and_cuda() {
        let (gpus, driver) = parse_query(&fixture("query-h200.csv")).unwrap();
        assert_eq!(driver, "550.127.05");
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].name, "NVIDIA H200");
        assert_eq!(gpus[0].memory_total_mib, Some(143771));
        assert_eq!(gpus[0].memory_used_mib, Some(0));
        assert_eq!(
            parse_cuda_version(&fixture("banner-h200.txt")).as_deref(),
            Some("12.4")
        );
        let report = GpuReport::Present {
            gpus,
            driver_version: driver,
            cuda_version: Some("12.4".into()),
        };
        assert_eq!(
            report.summary(),
            "1 × NVIDIA H200 (143771 MiB), driver 550.127.05, CUDA 12.4"
        );
    }

    #[test]
    fn several_gpus_are_listed_and_summarised_by_kind() {
        let (gpus, _) = parse_query(&fixture("query-2x4090.csv")).unwrap();
        assert_eq!(gpus.iter().map(|g| g.index).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(gpus[0].memory_used_mib, Some(1022));
        let report = GpuReport::Present {
            gpus,
            driver_version: "535.183.01".into(),
            cuda_version: None,
        };
        assert!(report
            .summary()
            .starts_with("2 × NVIDIA GeForce RTX 4090 (24564 MiB)"));
    }

    #[test]
    fn unsupported_values_become_none() {
        let (gpus, _) = parse_query(&fixture("query-mig.csv")).unwrap();
        assert_eq!(gpus[0].memory_total_mib, Some(81920));
        assert_eq!(gpus[0].memory_used_mib, None);
        assert_eq!(gpus[0].utilization_percent, None);
    }

    #[test]
    fn failures_are_reported_by_their_first_line() {
        let text = fixture("error-no-driver-exit9.txt");
        assert!(parse_query(&text).is_err());
        assert!(failure_line(&text, ExitStatus::Code(9)).starts_with("NVIDIA-SMI has failed"));
        assert_eq!(
            failure_line(&fixture("error-no-devices-exit6.txt"), ExitStatus::Code(6)),
            "No devices were found"
        );
        assert_eq!(parse_cuda_version("no banner"), None);
    }
}
