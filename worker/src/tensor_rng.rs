//! Seeded randomness that does not depend on libtorch's global generator.
//!
//! Stages run concurrently in one process, and libtorch's generator is
//! global; so inits, noise and batch orders are drawn here, from ChaCha8
//! streams keyed by (seed, purpose). The same seed gives the same tensors on
//! any device, in any process, whatever else runs beside it.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};
use tch::{Device, Tensor};

/// What a random stream is for; each purpose gets its own ChaCha stream.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Purpose {
    Init = 1,
    Noise = 2,
    BatchOrder = 3,
    /// The perturbation of a student's init (`student_init_noise`).
    InitNoise = 4,
    /// The noise a `noise:S` defense adds to a teacher's logits.
    DefenseNoise = 5,
    /// The weights of a random model ([`crate::llm::random`]).
    RandomModel = 6,
}

pub fn rng(seed: u64, purpose: Purpose) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(purpose as u64);
    rng
}

/// Normal(0, std) values of the given shape.
pub fn normal(rng: &mut ChaCha8Rng, shape: &[i64], std: f64) -> Tensor {
    let n: i64 = shape.iter().product();
    let dist = Normal::new(0.0f32, std as f32).expect("std is finite and positive");
    let values: Vec<f32> = (0..n).map(|_| dist.sample(rng)).collect();
    Tensor::from_slice(&values).view(shape)
}

/// `n` noise images, uniform in [-1, 1), as an [n, dim] tensor on `device`.
pub fn noise_images(seed: u64, n: i64, dim: i64, device: Device) -> Tensor {
    let mut rng = rng(seed, Purpose::Noise);
    let dist = Uniform::new(-1.0f32, 1.0f32);
    let values: Vec<f32> = (0..n * dim).map(|_| dist.sample(&mut rng)).collect();
    Tensor::from_slice(&values).view([n, dim]).to_device(device)
}

/// A random order of `0..n` for one epoch.
pub fn batch_order(seed: u64, epoch: u64, n: i64, device: Device) -> Tensor {
    let mut rng = rng(
        seed.wrapping_mul(1_000_003).wrapping_add(epoch),
        Purpose::BatchOrder,
    );
    let mut order: Vec<i64> = (0..n).collect();
    order.shuffle(&mut rng);
    Tensor::from_slice(&order).to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_noise_other_seed_other_noise() {
        let a = noise_images(7, 4, 5, Device::Cpu);
        let b = noise_images(7, 4, 5, Device::Cpu);
        let c = noise_images(8, 4, 5, Device::Cpu);
        assert!(a.equal(&b));
        assert!(!a.equal(&c));
        assert!(a.min().double_value(&[]) >= -1.0 && a.max().double_value(&[]) < 1.0);
    }

    #[test]
    fn batch_order_is_a_permutation() {
        let order = batch_order(1, 0, 100, Device::Cpu);
        let sorted = order.sort(0, false).0;
        assert!(sorted.equal(&Tensor::arange(100, (tch::Kind::Int64, Device::Cpu))));
        assert!(!order.equal(&batch_order(1, 1, 100, Device::Cpu)));
    }
}
