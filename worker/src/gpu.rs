//! GPU memory for the metrics, read with nvidia-smi (which ships with the
//! driver) every few seconds; libtorch exposes no memory query through tch.

use std::time::Duration;

use subliminal_shared::metrics::metrics;

/// Updates `subliminal_gpu_memory_{used,total}_bytes` for CUDA device `index`
/// until the process ends. Logs once and stops if nvidia-smi is not there.
pub async fn watch_memory(index: usize) {
    let label = format!("cuda:{index}");
    loop {
        let out = tokio::process::Command::new("nvidia-smi")
            .args([
                "--query-gpu=memory.used,memory.total",
                "--format=csv,noheader,nounits",
            ])
            .arg(format!("--id={index}"))
            .output()
            .await;
        let text = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            _ => {
                tracing::warn!("nvidia-smi is not available: GPU memory will not be reported");
                return;
            }
        };
        if let Some((used, total)) = parse(&text) {
            metrics()
                .gpu_memory_used
                .with_label_values(&[&label])
                .set(used);
            metrics()
                .gpu_memory_total
                .with_label_values(&[&label])
                .set(total);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// "1234, 81559" (MiB) → bytes.
fn parse(text: &str) -> Option<(f64, f64)> {
    let mut parts = text
        .lines()
        .next()?
        .split(',')
        .map(|p| p.trim().parse::<f64>());
    let used = parts.next()?.ok()?;
    let total = parts.next()?.ok()?;
    Some((used * 1024.0 * 1024.0, total * 1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_nvidia_smi_csv() {
        assert_eq!(
            super::parse("1024, 2048\n"),
            Some((1073741824.0, 2147483648.0))
        );
        assert_eq!(super::parse("N/A, 2048"), None);
    }
}
