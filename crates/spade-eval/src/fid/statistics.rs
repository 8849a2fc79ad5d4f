//! The statistics FID compares: the mean and the unbiased covariance (`np.cov(act,
//! rowvar=False)`) of a set's features, in float64; read from and written to pytorch-fid's
//! `.npz` (`mu`, `sigma`).

use std::path::Path;

use anyhow::{bail, ensure, Result};
use faer::Mat;

use super::npy;

/// Largest feature dimension pytorch-fid produces; bounds what a statistics file may hold.
const MAX_DIMS: usize = 2048;

#[derive(Debug, Clone)]
pub struct Statistics {
    pub mu: Vec<f64>,
    /// `dims x dims`, symmetric.
    pub sigma: Mat<f64>,
}

impl Statistics {
    /// From `n` feature rows of `dims` values each (row-major).
    pub fn from_activations(activations: &[f32], n: usize, dims: usize) -> Result<Self> {
        assert_eq!(activations.len(), n * dims, "activations of {n} x {dims}");
        ensure!(
            n >= 2,
            "{n} image(s): the covariance needs at least 2 (pytorch-fid would return nan)"
        );
        let value = |i: usize, j: usize| f64::from(activations[i * dims + j]);
        let mu: Vec<f64> = (0..dims)
            .map(|j| (0..n).map(|i| value(i, j)).sum::<f64>() / n as f64)
            .collect();
        let centred = Mat::from_fn(n, dims, |i, j| value(i, j) - mu[j]);
        let sigma = centred.transpose() * &centred * faer::Scale(1.0 / (n - 1) as f64);
        Ok(Self { mu, sigma })
    }

    pub fn dims(&self) -> usize {
        self.mu.len()
    }

    /// pytorch-fid's statistics file: `mu` (dims) and `sigma` (dims x dims).
    pub fn read_npz(path: &Path) -> Result<Self> {
        let what = path.display();
        let max_bytes = (MAX_DIMS * MAX_DIMS * 8 + 4096) as u64;
        let [mu, sigma]: [npy::Array; 2] = npy::read_npz(path, &["mu", "sigma"], max_bytes)?
            .try_into()
            .expect("two names asked");
        let dims = match mu.shape[..] {
            [d] => d,
            _ => bail!(
                "{what}: `mu` has shape {:?}, expected one dimension",
                mu.shape
            ),
        };
        ensure!(
            sigma.shape == [dims, dims],
            "{what}: `sigma` has shape {:?}, expected [{dims}, {dims}] to match `mu`",
            sigma.shape
        );
        for (a, name) in [(&mu, "mu"), (&sigma, "sigma")] {
            ensure!(
                a.values.iter().all(|v| v.is_finite()),
                "{what}: `{name}` holds non-finite values"
            );
        }
        Ok(Self {
            sigma: Mat::from_fn(dims, dims, |i, j| sigma.values[i * dims + j]),
            mu: mu.values,
        })
    }

    pub fn write_npz(&self, path: &Path) -> Result<()> {
        let d = self.dims();
        let sigma: Vec<f64> = (0..d * d).map(|k| self.sigma[(k / d, k % d)]).collect();
        npy::write_npz(
            path,
            &[
                ("mu", npy::encode_f64(&[d], &self.mu)),
                ("sigma", npy::encode_f64(&[d, d], &sigma)),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_unbiased_covariance() {
        // Rows (1, 2), (3, 6), (5, 7): means 3 and 5; cov = [[4, 5], [5, 7]].
        let s = Statistics::from_activations(&[1.0, 2.0, 3.0, 6.0, 5.0, 7.0], 3, 2).unwrap();
        assert_eq!(s.mu, [3.0, 5.0]);
        for (i, j, v) in [(0, 0, 4.0), (0, 1, 5.0), (1, 0, 5.0), (1, 1, 7.0)] {
            assert!((s.sigma[(i, j)] - v).abs() < 1e-12, "sigma[{i}, {j}]");
        }
        assert!(Statistics::from_activations(&[1.0, 2.0], 1, 2).is_err());
    }

    #[test]
    fn npz_files_that_do_not_hold_statistics_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.npz");
        let write = |members: &[(&str, Vec<u8>)]| npy::write_npz(&path, members).unwrap();
        let error = || format!("{:#}", Statistics::read_npz(&path).unwrap_err());
        write(&[("mu", npy::encode_f64(&[2], &[0.0; 2]))]);
        assert!(error().contains("no array `sigma`"), "{}", error());
        write(&[
            ("mu", npy::encode_f64(&[2], &[0.0; 2])),
            ("sigma", npy::encode_f64(&[3, 3], &[0.0; 9])),
        ]);
        assert!(error().contains("expected [2, 2]"), "{}", error());
        write(&[
            ("mu", npy::encode_f64(&[1], &[f64::NAN])),
            ("sigma", npy::encode_f64(&[1, 1], &[1.0])),
        ]);
        assert!(error().contains("non-finite"), "{}", error());
    }

    #[test]
    fn npz_round_trip_keeps_every_bit() {
        let s =
            Statistics::from_activations(&[1.0, 2.5, 3.0, 6.0, 5.0, 7.25, 0.1, 0.2], 4, 2).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.npz");
        s.write_npz(&path).unwrap();
        let back = Statistics::read_npz(&path).unwrap();
        assert_eq!(back.mu, s.mu);
        assert_eq!(back.sigma, s.sigma);
    }
}
