//! Interpolants: how a model's noisy state mixes data and noise over time,
//! `x_t = alpha(t) x0 + sigma(t) eps`, with t in [0, 1] (1 = noise, 0 = data).
//!
//! The discrete VP schedules reproduce diffusers' tables: betas in f32 (torch's `linspace`
//! algorithm), `alphas_cumprod` as torch's CPU `cumprod` computes it (f64 accumulation, each
//! entry rounded to f32). A continuous time t maps to the table by `n = t N - 1`, with κ = σ/α
//! interpolated linearly in n between entries (as diffusers' Euler-family schedulers do) and
//! from κ = 0 at n = -1 (t = 0, data) to κ_0.

use std::f64::consts::FRAC_PI_2;
use std::sync::Arc;

/// The beta schedules of diffusers' discrete-time models.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BetaSchedule {
    /// `linspace(beta_start, beta_end, N)`.
    Linear { beta_start: f64, beta_end: f64 },
    /// `linspace(sqrt(beta_start), sqrt(beta_end), N)^2` (Stable Diffusion: 0.00085 → 0.012).
    ScaledLinear { beta_start: f64, beta_end: f64 },
    /// GLIDE's cosine `alpha_bar(t) = cos²((t + 0.008)/1.008 · π/2)`, betas capped at 0.999.
    SquaredCosCapV2,
}

impl BetaSchedule {
    /// Stable Diffusion's schedule.
    pub const STABLE_DIFFUSION: BetaSchedule = BetaSchedule::ScaledLinear { beta_start: 0.00085, beta_end: 0.012 };
    /// DDPM's original schedule.
    pub const DDPM_LINEAR: BetaSchedule = BetaSchedule::Linear { beta_start: 0.0001, beta_end: 0.02 };

    pub fn name(&self) -> &'static str {
        match self {
            BetaSchedule::Linear { .. } => "linear",
            BetaSchedule::ScaledLinear { .. } => "scaled_linear",
            BetaSchedule::SquaredCosCapV2 => "squaredcos_cap_v2",
        }
    }

    /// The betas as diffusers computes them, in f32.
    pub fn betas(&self, train_steps: usize) -> Vec<f32> {
        match *self {
            BetaSchedule::Linear { beta_start, beta_end } => {
                torch_linspace_f32(beta_start as f32, beta_end as f32, train_steps)
            }
            BetaSchedule::ScaledLinear { beta_start, beta_end } => {
                torch_linspace_f32(beta_start.sqrt() as f32, beta_end.sqrt() as f32, train_steps)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            BetaSchedule::SquaredCosCapV2 => {
                let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * FRAC_PI_2).cos().powi(2);
                (0..train_steps)
                    .map(|i| {
                        let t1 = i as f64 / train_steps as f64;
                        let t2 = (i + 1) as f64 / train_steps as f64;
                        (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                    })
                    .collect()
            }
        }
    }
}

/// torch's CPU `linspace` for float32: `start + step·i` in the first half, `end − step·(n−1−i)` in
/// the second, with `step = (end − start)/(n − 1)`, all in f32.
fn torch_linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| if i < halfway { start + step * i as f32 } else { end - step * (steps - i - 1) as f32 })
        .collect()
}

/// A discrete-time variance-preserving schedule: `alphas_cumprod` over N training steps.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscreteVp {
    pub schedule: BetaSchedule,
    /// `alphas_cumprod[n]`, rounded to f32 as diffusers stores it.
    pub alphas_cumprod: Arc<[f32]>,
    /// κ_n = sqrt((1 − ᾱ_n)/ᾱ_n), computed in f64 from the f32 ᾱ.
    pub kappas: Arc<[f64]>,
}

impl DiscreteVp {
    pub fn new(schedule: BetaSchedule, train_steps: usize) -> DiscreteVp {
        let betas = schedule.betas(train_steps);
        let mut product = 1.0f64;
        let alphas_cumprod: Vec<f32> = betas
            .iter()
            .map(|beta| {
                product *= f64::from(1.0f32 - beta);
                product as f32
            })
            .collect();
        let kappas = alphas_cumprod.iter().map(|&a| ((1.0 - f64::from(a)) / f64::from(a)).sqrt()).collect();
        DiscreteVp { schedule, alphas_cumprod: alphas_cumprod.into(), kappas }
    }

    pub fn train_steps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// κ at a fractional table index n in [-1, N-1] (κ = 0 at n = -1), linear in n.
    fn kappa_at_index(&self, n: f64) -> f64 {
        let last = (self.kappas.len() - 1) as f64;
        let n = n.clamp(-1.0, last);
        let low = n.floor();
        let w = n - low;
        let at = |i: f64| if i < 0.0 { 0.0 } else { self.kappas[i as usize] };
        if w == 0.0 { at(low) } else { at(low) * (1.0 - w) + at(low + 1.0) * w }
    }

    /// dκ/dn on the segment containing n (the right-hand derivative at table points).
    fn kappa_slope(&self, n: f64) -> f64 {
        let last = (self.kappas.len() - 1) as f64;
        let low = n.clamp(-1.0, last - 1.0).floor();
        let at = |i: f64| if i < 0.0 { 0.0 } else { self.kappas[i as usize] };
        at(low + 1.0) - at(low)
    }

    /// The fractional index whose κ is `kappa` (the inverse of the piecewise-linear map).
    fn index_of_kappa(&self, kappa: f64) -> f64 {
        if kappa <= 0.0 {
            return -1.0;
        }
        let table = &self.kappas;
        if kappa <= table[0] {
            return -1.0 + kappa / table[0];
        }
        let last = table.len() - 1;
        if kappa >= table[last] {
            return last as f64;
        }
        // κ increases with n: find the segment [k, k+1] that contains it.
        let upper = table.partition_point(|&k| k < kappa);
        let (k0, k1) = (table[upper - 1], table[upper]);
        (upper - 1) as f64 + (kappa - k0) / (k1 - k0)
    }
}

/// How a model's state mixes data and noise over time.
#[derive(Clone, Debug, PartialEq)]
pub enum Interpolant {
    /// Rectified flow: α = 1 − t, σ = t (SD3, Flux, flow matching).
    RectifiedFlow,
    /// Continuous VP cosine: α = cos(tπ/2), σ = sin(tπ/2).
    VpCosine,
    /// Discrete VP over a diffusers training table.
    Discrete(DiscreteVp),
    /// Variance exploding (EDM, consistency models): α = 1, σ = σ_max · t.
    Ve { sigma_max: f64 },
    /// TrigFlow (sCM): α = cos(tπ/2), σ = σ_d sin(tπ/2).
    TrigFlow { sigma_data: f64 },
}

impl Interpolant {
    pub fn name(&self) -> String {
        match self {
            Interpolant::RectifiedFlow => "rectified_flow".into(),
            Interpolant::VpCosine => "vp_cosine".into(),
            Interpolant::Discrete(d) => d.schedule.name().into(),
            Interpolant::Ve { sigma_max } => format!("ve(sigma_max={sigma_max})"),
            Interpolant::TrigFlow { sigma_data } => format!("trigflow(sigma_data={sigma_data})"),
        }
    }

    /// Signal scale α(t).
    pub fn alpha(&self, t: f64) -> f64 {
        match self {
            Interpolant::RectifiedFlow => 1.0 - t,
            Interpolant::VpCosine | Interpolant::TrigFlow { .. } => (t * FRAC_PI_2).cos(),
            Interpolant::Discrete(d) => 1.0 / (1.0 + d.kappa_at_index(t * d.train_steps() as f64 - 1.0).powi(2)).sqrt(),
            Interpolant::Ve { .. } => 1.0,
        }
    }

    /// Noise scale σ(t).
    pub fn sigma(&self, t: f64) -> f64 {
        match self {
            Interpolant::RectifiedFlow => t,
            Interpolant::VpCosine => (t * FRAC_PI_2).sin(),
            Interpolant::TrigFlow { sigma_data } => sigma_data * (t * FRAC_PI_2).sin(),
            Interpolant::Discrete(d) => {
                let kappa = d.kappa_at_index(t * d.train_steps() as f64 - 1.0);
                kappa / (1.0 + kappa * kappa).sqrt()
            }
            Interpolant::Ve { sigma_max } => sigma_max * t,
        }
    }

    /// dα/dt.
    pub fn d_alpha(&self, t: f64) -> f64 {
        match self {
            Interpolant::RectifiedFlow => -1.0,
            Interpolant::VpCosine | Interpolant::TrigFlow { .. } => -FRAC_PI_2 * (t * FRAC_PI_2).sin(),
            Interpolant::Discrete(d) => {
                let n = t * d.train_steps() as f64 - 1.0;
                let kappa = d.kappa_at_index(n);
                let alpha = 1.0 / (1.0 + kappa * kappa).sqrt();
                -kappa * alpha.powi(3) * d.kappa_slope(n) * d.train_steps() as f64
            }
            Interpolant::Ve { .. } => 0.0,
        }
    }

    /// dσ/dt.
    pub fn d_sigma(&self, t: f64) -> f64 {
        match self {
            Interpolant::RectifiedFlow => 1.0,
            Interpolant::VpCosine => FRAC_PI_2 * (t * FRAC_PI_2).cos(),
            Interpolant::TrigFlow { sigma_data } => sigma_data * FRAC_PI_2 * (t * FRAC_PI_2).cos(),
            Interpolant::Discrete(d) => {
                let n = t * d.train_steps() as f64 - 1.0;
                let kappa = d.kappa_at_index(n);
                let alpha = 1.0 / (1.0 + kappa * kappa).sqrt();
                alpha.powi(3) * d.kappa_slope(n) * d.train_steps() as f64
            }
            Interpolant::Ve { sigma_max } => *sigma_max,
        }
    }

    /// Log signal-to-noise ratio λ(t) = log(α/σ): +∞ at data, −∞ where α = 0.
    pub fn lambda(&self, t: f64) -> f64 {
        (self.alpha(t) / self.sigma(t)).ln()
    }

    /// κ(t) = σ/α, the noise level of the "variance exploding" view (k-diffusion's sigma).
    pub fn kappa(&self, t: f64) -> f64 {
        match self {
            Interpolant::Discrete(d) => d.kappa_at_index(t * d.train_steps() as f64 - 1.0),
            _ => self.sigma(t) / self.alpha(t),
        }
    }

    /// The time whose κ is `kappa` (κ increases with t for every interpolant).
    pub fn t_of_kappa(&self, kappa: f64) -> f64 {
        match self {
            Interpolant::RectifiedFlow => kappa / (1.0 + kappa),
            Interpolant::VpCosine => kappa.atan() / FRAC_PI_2,
            Interpolant::TrigFlow { sigma_data } => (kappa / sigma_data).atan() / FRAC_PI_2,
            Interpolant::Discrete(d) => ((d.index_of_kappa(kappa) + 1.0) / d.train_steps() as f64).clamp(0.0, 1.0),
            Interpolant::Ve { sigma_max } => (kappa / sigma_max).clamp(0.0, 1.0),
        }
    }

    /// The finite range (κ_min, κ_max) of nonzero noise levels the model was trained on, when it
    /// has one (Karras-type grids need it): the table's ends for discrete schedules.
    pub fn kappa_range(&self) -> Option<(f64, f64)> {
        match self {
            Interpolant::Discrete(d) => Some((d.kappas[0], d.kappas[d.kappas.len() - 1])),
            Interpolant::Ve { sigma_max } => Some((0.002, *sigma_max)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_diffusion_table_matches_published_values() {
        // notes/samplers.md §2: ᾱ_999 = 0.004660, κ_999 = 14.6146, κ_0 = 0.02917.
        let d = DiscreteVp::new(BetaSchedule::STABLE_DIFFUSION, 1000);
        assert!((f64::from(d.alphas_cumprod[999]) - 0.004660).abs() < 5e-7);
        assert!((d.kappas[999] - 14.6146).abs() < 1e-4);
        assert!((d.kappas[0] - 0.02917).abs() < 1e-5);
    }

    #[test]
    fn discrete_times_hit_table_entries() {
        let d = DiscreteVp::new(BetaSchedule::STABLE_DIFFUSION, 1000);
        let interp = Interpolant::Discrete(d.clone());
        for n in [0usize, 1, 500, 999] {
            let t = (n + 1) as f64 / 1000.0;
            let abar = f64::from(d.alphas_cumprod[n]);
            assert!((interp.alpha(t) - abar.sqrt()).abs() < 1e-12, "n = {n}");
            assert!((interp.sigma(t) - (1.0 - abar).sqrt()).abs() < 1e-12, "n = {n}");
        }
        assert_eq!(interp.alpha(0.0), 1.0);
        assert_eq!(interp.sigma(0.0), 0.0);
    }

    #[test]
    fn t_of_kappa_inverts_kappa() {
        let interps = [
            Interpolant::RectifiedFlow,
            Interpolant::VpCosine,
            Interpolant::Discrete(DiscreteVp::new(BetaSchedule::SquaredCosCapV2, 1000)),
            Interpolant::Discrete(DiscreteVp::new(BetaSchedule::DDPM_LINEAR, 1000)),
            Interpolant::Ve { sigma_max: 80.0 },
            Interpolant::TrigFlow { sigma_data: 0.5 },
        ];
        for interp in &interps {
            for t in [0.0005, 0.01, 0.3, 0.5, 0.77, 0.95] {
                let back = interp.t_of_kappa(interp.kappa(t));
                assert!((back - t).abs() < 1e-9, "{}: t = {t}, back = {back}", interp.name());
            }
        }
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let interps = [
            Interpolant::RectifiedFlow,
            Interpolant::VpCosine,
            Interpolant::Discrete(DiscreteVp::new(BetaSchedule::STABLE_DIFFUSION, 1000)),
            Interpolant::Ve { sigma_max: 80.0 },
            Interpolant::TrigFlow { sigma_data: 0.5 },
        ];
        for interp in &interps {
            // Mid-segment points, so the piecewise-linear discrete schedule is differentiable there.
            for t in [0.1234, 0.4567, 0.8765] {
                let h = 1e-7;
                let fd_alpha = (interp.alpha(t + h) - interp.alpha(t - h)) / (2.0 * h);
                let fd_sigma = (interp.sigma(t + h) - interp.sigma(t - h)) / (2.0 * h);
                assert!(
                    (fd_alpha - interp.d_alpha(t)).abs() < 1e-5 * (1.0 + fd_alpha.abs()),
                    "{} d_alpha at {t}",
                    interp.name()
                );
                assert!(
                    (fd_sigma - interp.d_sigma(t)).abs() < 1e-5 * (1.0 + fd_sigma.abs()),
                    "{} d_sigma at {t}",
                    interp.name()
                );
            }
        }
    }
}
