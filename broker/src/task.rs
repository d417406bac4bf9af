//! Task bodies: what a worker needs to run one stage, as MessagePack.

use serde::{Deserialize, Serialize};

use subliminal_shared::stage::StageSpec;

/// The message in Redis that asks a worker to run one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskBody {
    /// Bumped when the body's shape changes; workers refuse versions they do not know.
    pub version: u32,
    pub sweep: String,
    pub queue: String,
    pub priority: i64,
    pub stage: StageSpec,
}

pub const BODY_VERSION: u32 = 1;

pub fn encode_body(body: &TaskBody) -> anyhow::Result<Vec<u8>> {
    Ok(rmp_serde::to_vec_named(body)?)
}

/// Decodes and checks a body: a clear error for anything malformed or altered.
pub fn decode_body(bytes: &[u8]) -> anyhow::Result<TaskBody> {
    let body: TaskBody = rmp_serde::from_slice(bytes)
        .map_err(|e| anyhow::anyhow!("malformed task body ({} bytes): {e}", bytes.len()))?;
    anyhow::ensure!(
        body.version == BODY_VERSION,
        "task body version {} is not {BODY_VERSION}: this worker is older or newer than the scheduler",
        body.version
    );
    anyhow::ensure!(
        body.stage.verify_id(),
        "task body for stage {} does not match its content",
        body.stage.id
    );
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use subliminal_shared::stage::StageKind;

    #[test]
    fn bodies_round_trip_and_bad_ones_are_refused() {
        let stage = StageSpec::new(
            "exp",
            StageKind::from_static("teacher"),
            &serde_json::json!({"lr": 0.1}),
            vec![],
        );
        let body = TaskBody {
            version: BODY_VERSION,
            sweep: "s".into(),
            queue: "cpu".into(),
            priority: 0,
            stage,
        };
        let bytes = encode_body(&body).unwrap();
        assert_eq!(decode_body(&bytes).unwrap(), body);
        assert!(decode_body(b"\xc1garbage")
            .unwrap_err()
            .to_string()
            .contains("malformed task body"));
        let mut altered = body.clone();
        altered.stage.params = serde_json::json!({"lr": 0.2});
        assert!(decode_body(&encode_body(&altered).unwrap())
            .unwrap_err()
            .to_string()
            .contains("does not match"));
    }
}
