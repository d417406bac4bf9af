//! What a long stage needs to stop partway and resume: somewhere to keep
//! its state. The stages decide what the state is (a fine-tune's or an
//! MNIST model's weights and moments, a generation's finished rows); this
//! says where it goes and when.

/// Where a long run (training, generation) keeps its progress, and how
/// often: a stage's area in the store ([`crate::progress::Progress`]), or
/// anything else that holds bytes.
pub trait Checkpoints {
    /// The latest state saved for this run; `None` when there is none or it
    /// does not verify (the run starts over).
    fn load(&self) -> Option<Vec<u8>>;
    fn save(&self, state: Vec<u8>) -> anyhow::Result<()>;
    /// Whether a save is due, the last one (or the start) `since` ago.
    fn due(&self, since: std::time::Duration) -> bool;
    /// Told that the run resumed at `step` of `total`, `seconds` of
    /// training in (which it does not redo).
    fn resumed(&self, _step: u64, _total: u64, _seconds: f64) {}
}

/// Saved states in memory, for tests: a save whenever asked, or only when
/// the run is stopped.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Memory {
    pub saved: std::cell::RefCell<Option<Vec<u8>>>,
    pub every_step: bool,
    pub saves: std::cell::Cell<u32>,
    pub resumed_at: std::cell::Cell<Option<u64>>,
}

#[cfg(test)]
impl Checkpoints for Memory {
    fn load(&self) -> Option<Vec<u8>> {
        self.saved.borrow().clone()
    }
    fn save(&self, state: Vec<u8>) -> anyhow::Result<()> {
        self.saves.set(self.saves.get() + 1);
        *self.saved.borrow_mut() = Some(state);
        Ok(())
    }
    fn due(&self, _since: std::time::Duration) -> bool {
        self.every_step
    }
    fn resumed(&self, step: u64, _total: u64, _seconds: f64) {
        self.resumed_at.set(Some(step));
    }
}
