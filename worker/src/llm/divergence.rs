//! Divergence tokens: the positions of a completion where one model's greedy
//! next-token choice differs from another's. Later work found the trait
//! signal of subliminal learning concentrated in the few tokens where the
//! trait teacher's choice differs from the base model's; the
//! `mask-divergence` defense leaves exactly those out of the student's loss.

use tch::{Device, Kind, Tensor};

use super::Llama;

/// `model`'s greedy next token at every position that predicts a token of
/// `answer`, after `prompt` (one forward pass over prompt and answer).
pub fn greedy_choices(model: &Llama, prompt: &[u32], answer: &[u32]) -> anyhow::Result<Vec<i64>> {
    anyhow::ensure!(
        !prompt.is_empty(),
        "an empty prompt leaves no position to predict the answer's first token from"
    );
    if answer.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = prompt.iter().chain(answer).map(|&t| t as i64).collect();
    let n = ids.len() as i64;
    let device = model.device();
    let tokens = Tensor::from_slice(&ids).view([1, n]).to_device(device);
    let positions = Tensor::arange(n, (Kind::Int64, device)).view([1, n]);
    let choices = tch::no_grad(|| {
        let hidden = model.forward(&tokens, &positions, None, None);
        let from = hidden.narrow(1, prompt.len() as i64 - 1, answer.len() as i64);
        model.logits(&from).argmax(-1, false).flatten(0, -1)
    });
    Ok(Vec::<i64>::try_from(choices.to_device(Device::Cpu))?)
}

/// For each token of `answer` after `prompt`: its log-probability under
/// `model`, and `model`'s greedy choice at that position.
pub fn answer_log_probs(
    model: &Llama,
    prompt: &[u32],
    answer: &[u32],
) -> anyhow::Result<(Vec<f64>, Vec<i64>)> {
    anyhow::ensure!(
        !prompt.is_empty(),
        "an empty prompt leaves no position to predict the answer's first token from"
    );
    if answer.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let ids: Vec<i64> = prompt.iter().chain(answer).map(|&t| t as i64).collect();
    let n = ids.len() as i64;
    let device = model.device();
    let tokens = Tensor::from_slice(&ids).view([1, n]).to_device(device);
    let positions = Tensor::arange(n, (Kind::Int64, device)).view([1, n]);
    let targets: Vec<i64> = answer.iter().map(|&t| t as i64).collect();
    let (log_probs, choices) = tch::no_grad(|| {
        let hidden = model.forward(&tokens, &positions, None, None);
        let from = hidden.narrow(1, prompt.len() as i64 - 1, answer.len() as i64);
        let logits = model.logits(&from).to_kind(Kind::Float).squeeze_dim(0);
        let log_softmax = logits.log_softmax(-1, Kind::Float);
        let target = Tensor::from_slice(&targets).to_device(device).unsqueeze(1);
        (
            log_softmax.gather(1, &target, false).squeeze_dim(1),
            logits.argmax(-1, false),
        )
    });
    Ok((
        Vec::<f64>::try_from(log_probs.to_kind(Kind::Double).to_device(Device::Cpu))?,
        Vec::<i64>::try_from(choices.to_device(Device::Cpu))?,
    ))
}

/// For each token of `answer`: whether `teacher` (after its own prompt,
/// which may carry a system prompt) would choose a different token there
/// than `base` (after the student's prompt).
pub fn divergent_tokens(
    teacher: &Llama,
    teacher_prompt: &[u32],
    base: &Llama,
    base_prompt: &[u32],
    answer: &[u32],
) -> anyhow::Result<Vec<bool>> {
    let by_teacher = greedy_choices(teacher, teacher_prompt, answer)?;
    let by_base = greedy_choices(base, base_prompt, answer)?;
    Ok(by_teacher
        .iter()
        .zip(&by_base)
        .map(|(t, b)| t != b)
        .collect())
}
