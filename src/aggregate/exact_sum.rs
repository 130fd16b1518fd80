//! Sums that are exact and independent of order: partial sums merged in any grouping give the
//! same bits as a sum over all records, which is what makes repartitioned partials verifiable.

/// Fractional digits kept by [`ExactSum`].
pub const SUM_SCALE: i128 = 1_000_000;

/// A decimal sum in millionths. `9.99 + 0.01` is exactly `10`, whatever the order of additions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExactSum {
    pub millionths: i128,
    /// Whether every added value was an integer (then the sum is reported as an integer).
    pub fractional: bool,
}

impl ExactSum {
    #[inline]
    pub fn add_int(&mut self, value: i64) {
        self.millionths += value as i128 * SUM_SCALE;
    }

    /// Adds a decimal, rounded to six fractional digits.
    #[inline]
    pub fn add_float(&mut self, value: f64) {
        self.millionths += (value * SUM_SCALE as f64).round() as i128;
        self.fractional = true;
    }

    pub fn merge(&mut self, other: &ExactSum) {
        self.millionths += other.millionths;
        self.fractional |= other.fractional;
    }

    /// The sum as JSON: an integer when all inputs were integers, else a decimal.
    ///
    /// # Examples
    /// ```
    /// use eddy::aggregate::ExactSum;
    /// let mut sum = ExactSum::default();
    /// for _ in 0..10 { sum.add_float(0.1); }
    /// assert_eq!(sum.to_json(), serde_json::json!(1.0));
    /// ```
    pub fn to_json(&self) -> serde_json::Value {
        if !self.fractional {
            let whole = self.millionths / SUM_SCALE;
            return i64::try_from(whole)
                .map_or_else(|_| serde_json::json!(whole as f64), serde_json::Value::from);
        }
        let whole = self.millionths / SUM_SCALE;
        let fraction = (self.millionths % SUM_SCALE).abs();
        let sign = if self.millionths < 0 && whole == 0 {
            "-"
        } else {
            ""
        };
        let text = format!("{sign}{whole}.{fraction:06}");
        serde_json::Value::Number(
            text.parse()
                .unwrap_or_else(|_| serde_json::Number::from_f64(0.0).expect("finite")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_does_not_change_the_result() {
        let values = [19.99, 0.01, 1e9 + 0.5, 3.333333, -2.25, 7.1];
        let mut forward = ExactSum::default();
        values.iter().for_each(|v| forward.add_float(*v));
        let mut halves = (ExactSum::default(), ExactSum::default());
        values.iter().rev().enumerate().for_each(|(i, v)| {
            if i % 2 == 0 {
                halves.0.add_float(*v)
            } else {
                halves.1.add_float(*v)
            }
        });
        halves.0.merge(&halves.1);
        assert_eq!(forward, halves.0);
        assert_eq!(forward.to_json().to_string(), "1000000028.683333");
    }

    #[test]
    fn integer_sums_stay_integers_and_negatives_print_right() {
        let mut sum = ExactSum::default();
        sum.add_int(3);
        sum.add_int(4);
        assert_eq!(sum.to_json(), serde_json::json!(7));
        let mut neg = ExactSum::default();
        neg.add_float(-0.5);
        assert_eq!(neg.to_json().to_string(), "-0.5");
    }
}
