//! Running out of device memory partway through a stage: a training step
//! or a generation batch that does not fit is run again in halves, down to
//! one example, instead of failing the stage. On a GPU the memory a step
//! needs depends on its longest row and its batch; a sweep sized on one card
//! should still finish on a smaller one, and give the same result.

/// Whether a libtorch error says the device ran out of memory.
pub fn is_out_of_memory(message: &str) -> bool {
    message.contains("out of memory") || message.contains("can't allocate memory")
}

/// Runs `step(micro)`; when libtorch runs out of memory inside it, runs it
/// again at half the micro-batch, down to 1, counting each retry. Any other
/// failure, or running out at 1, is an error that says so. A caller that
/// keeps the examples of a step (and weights each micro-batch by its
/// tokens) gets the same update at any micro-batch, to float rounding.
pub fn fitting<T>(
    micro: &mut usize,
    retries: &mut u32,
    mut step: impl FnMut(usize) -> T,
) -> anyhow::Result<T> {
    loop {
        let failure = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(*micro)))
        {
            Ok(done) => return Ok(done),
            Err(payload) => payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".to_owned()),
        };
        if !is_out_of_memory(&failure) {
            anyhow::bail!("{failure}");
        }
        if *micro <= 1 {
            anyhow::bail!(
                "out of memory at a micro-batch of 1 example: the model does not fit this device ({failure})"
            );
        }
        let smaller = *micro / 2;
        tracing::warn!(
            "out of memory at a micro-batch of {micro}: running it again in parts of {smaller}"
        );
        *micro = smaller;
        *retries += 1;
        subliminal_shared::metrics::metrics()
            .out_of_memory_retries
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_halves_the_micro_batch_and_any_other_failure_is_an_error() {
        let (mut micro, mut retries) = (8, 0);
        let tried = std::cell::RefCell::new(Vec::new());
        let fits = |m: usize| {
            tried.borrow_mut().push(m);
            if m > 2 {
                panic!("CUDA out of memory. Tried to allocate 2.00 GiB");
            }
            m * 10
        };
        assert_eq!(fitting(&mut micro, &mut retries, fits).unwrap(), 20);
        assert_eq!((micro, retries), (2, 2));
        assert_eq!(*tried.borrow(), [8, 4, 2]);
        let (mut micro, mut retries) = (1, 0);
        let never = |_| -> usize { panic!("CUDA out of memory. Tried to allocate 20.00 GiB") };
        let err = fitting(&mut micro, &mut retries, never)
            .unwrap_err()
            .to_string();
        assert!(err.contains("micro-batch of 1"), "{err}");
        let (mut micro, mut retries) = (4, 0);
        let broken = |_| -> usize { panic!("shape mismatch") };
        let err = fitting(&mut micro, &mut retries, broken)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("shape mismatch") && micro == 4 && retries == 0,
            "{err}"
        );
    }
}
