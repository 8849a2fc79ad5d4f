//! The statistics FID compares: the mean and the unbiased covariance (`np.cov(act,
//! rowvar=False)`) of a set's features, in float64; read from and written to pytorch-fid's
//! `.npz` (`mu`, `sigma`).

use std::path::Path;

use anyhow::{bail, ensure, Result};
use nalgebra::{DMatrix, DVector};

use super::npy;

/// Largest feature dimension pytorch-fid produces; bounds what a statistics file may hold.
const MAX_DIMS: usize = 2048;

#[derive(Debug, Clone)]
pub struct Statistics {
    pub mu: DVector<f64>,
    pub sigma: DMatrix<f64>,
}

impl Statistics {
    /// From `n` feature rows of `dims` values each (row-major).
    pub fn from_activations(activations: &[f32], n: usize, dims: usize) -> Result<Self> {
        assert_eq!(activations.len(), n * dims, "activations of {n} x {dims}");
        ensure!(
            n >= 2,
            "{n} image(s): the covariance needs at least 2 (pytorch-fid would return nan)"
        );
        let x = DMatrix::from_row_iterator(n, dims, activations.iter().map(|&v| f64::from(v)));
        let mu = DVector::from_iterator(dims, x.column_iter().map(|c| c.mean()));
        let mut centred = x;
        for mut row in centred.row_iter_mut() {
            row -= mu.transpose();
        }
        let sigma = (centred.transpose() * &centred) / (n - 1) as f64;
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
        let finite = |a: &npy::Array, name| {
            ensure!(
                a.values.iter().all(|v| v.is_finite()),
                "{what}: `{name}` holds non-finite values"
            );
            Ok(())
        };
        finite(&mu, "mu")?;
        finite(&sigma, "sigma")?;
        Ok(Self {
            mu: DVector::from_vec(mu.values),
            sigma: DMatrix::from_row_slice(dims, dims, &sigma.values),
        })
    }

    pub fn write_npz(&self, path: &Path) -> Result<()> {
        let d = self.dims();
        let sigma: Vec<f64> = self.sigma.transpose().iter().copied().collect();
        npy::write_npz(
            path,
            &[
                ("mu", npy::encode_f64(&[d], self.mu.as_slice())),
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
        assert_eq!(s.mu.as_slice(), [3.0, 5.0]);
        assert_eq!(
            s.sigma,
            DMatrix::from_row_slice(2, 2, &[4.0, 5.0, 5.0, 7.0])
        );
        assert!(Statistics::from_activations(&[1.0, 2.0], 1, 2).is_err());
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
