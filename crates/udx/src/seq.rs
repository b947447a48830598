//! Wrapping comparisons of 32-bit sequence numbers (serial number arithmetic): a stream may
//! run long enough for them to wrap, so `<` on raw values would be wrong.

#[inline]
pub fn diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

#[inline]
pub fn lt(a: u32, b: u32) -> bool {
    diff(a, b) < 0
}

#[inline]
pub fn le(a: u32, b: u32) -> bool {
    diff(a, b) <= 0
}

#[inline]
pub fn gt(a: u32, b: u32) -> bool {
    diff(a, b) > 0
}

#[inline]
pub fn ge(a: u32, b: u32) -> bool {
    diff(a, b) >= 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_across_wrap() {
        assert!(lt(u32::MAX, 0));
        assert!(gt(0, u32::MAX));
        assert!(le(5, 5) && ge(5, 5));
        assert_eq!(diff(2, u32::MAX - 1), 4);
    }
}
