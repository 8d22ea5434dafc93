//! In-place evaluation gives exactly the values of ordinary evaluation.

use crate::common;

use common::in_place_ddim_kernel;
use sched_kernels::cpu::{InPlace, evaluate, evaluate_in_place};
use sched_kernels::jit::{CompiledKernel, JitError, MIN_CHUNK};
use sched_kernels::spec::KernelError;
use sched_kernels::spec::{NoiseLaunch, NoiseSlot};

#[test]
fn writing_an_output_over_its_input_gives_the_same_values() {
    let kernel = in_place_ddim_kernel();
    for len in [1usize, 255, 256, 257, 1003] {
        let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
        let e: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
        let slots = [NoiseSlot { site: 3, step: 1 }];
        let noise = NoiseLaunch { seed: 5, per_sample: 4, slots: &slots };
        let params = [0.9, -0.3, 0.05];
        let expected = evaluate(&kernel, len, &[&x, &e], &params, &noise).expect("evaluates");
        let mut buffer = x.clone();
        let mut in_place = [InPlace { input: 0, output: 0, buffer: &mut buffer }];
        let others = evaluate_in_place(&kernel, len, &[&[], &e], &mut in_place, &params, &noise).expect("evaluates");
        assert_eq!(buffer, expected[0], "len {len}");
        assert!(others[0].is_none());
        assert_eq!(others[1].as_ref(), Some(&expected[1]), "len {len}");
    }
}

#[test]
fn invalid_pairings_are_errors() {
    let kernel = in_place_ddim_kernel();
    let e = vec![0.0f32; 8];
    let slots = [NoiseSlot { site: 0, step: 0 }];
    let noise = NoiseLaunch { seed: 0, per_sample: 1, slots: &slots };
    let mut a = vec![0.0f32; 8];
    let mut in_place = [InPlace { input: 0, output: 5, buffer: &mut a }];
    let result = evaluate_in_place(&kernel, 8, &[&[], &e], &mut in_place, &[1.0, 1.0, 1.0], &noise);
    assert_eq!(result, Err(KernelError::InPlace { input: 0, output: 5 }));
    let mut short = vec![0.0f32; 4];
    let mut in_place = [InPlace { input: 0, output: 0, buffer: &mut short }];
    let result = evaluate_in_place(&kernel, 8, &[&[], &e], &mut in_place, &[1.0, 1.0, 1.0], &noise);
    assert!(matches!(result, Err(KernelError::InputTooShort { input: 0, actual: 4, len: 8 })), "{result:?}");
}

#[test]
fn the_jit_writes_in_place_the_values_of_the_reference() {
    let kernel = in_place_ddim_kernel();
    let compiled = CompiledKernel::compile(&kernel).expect("compiles");
    for (len, threads) in [(1usize, 1usize), (257, 1), (1003, 2), (3 * MIN_CHUNK + 5, 3), (2 * MIN_CHUNK, 4)] {
        let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
        let e: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
        let slots = [NoiseSlot { site: 2, step: 7 }];
        let noise = NoiseLaunch { seed: 11, per_sample: 6, slots: &slots };
        let params = [0.9, -0.3, 0.05];
        let expected = evaluate(&kernel, len, &[&x, &e], &params, &noise).expect("evaluates");
        let mut buffer = x.clone();
        let mut in_place = [InPlace { input: 0, output: 0, buffer: &mut buffer }];
        let others = compiled.run_in_place(threads, len, &[&[], &e], &mut in_place, &params, &noise).expect("runs");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&buffer), bits(&expected[0]), "len {len}, {threads} threads");
        assert!(others[0].is_none());
        assert_eq!(others[1].as_deref().map(bits), Some(bits(&expected[1])), "len {len}, {threads} threads");
    }
}

#[test]
fn the_jit_rejects_invalid_in_place_pairings() {
    let compiled = CompiledKernel::compile(&in_place_ddim_kernel()).expect("compiles");
    let e = vec![0.0f32; 8];
    let slots = [NoiseSlot { site: 0, step: 0 }];
    let noise = NoiseLaunch { seed: 0, per_sample: 1, slots: &slots };
    let (mut a, mut b) = (vec![0.0f32; 8], vec![0.0f32; 8]);
    let mut twice = [InPlace { input: 0, output: 0, buffer: &mut a }, InPlace { input: 1, output: 0, buffer: &mut b }];
    let result = compiled.run_in_place(1, 8, &[&[], &[]], &mut twice, &[1.0, 1.0, 1.0], &noise);
    assert!(matches!(result, Err(JitError::Kernel(KernelError::InPlace { input: 1, output: 0 }))), "{result:?}");
    let mut short = vec![0.0f32; 4];
    let mut in_place = [InPlace { input: 0, output: 0, buffer: &mut short }];
    let result = compiled.run_in_place(1, 8, &[&[], &e], &mut in_place, &[1.0, 1.0, 1.0], &noise);
    assert!(matches!(result, Err(JitError::Kernel(KernelError::InputTooShort { input: 0, actual: 4, len: 8 }))));
}
