use std::fmt;
use std::ops::Index;

/// List containing max 31 items.
///
/// Chorus patch: backed by a `Vec` instead of an inline `[Option<T>; 31]`. The inline array made an
/// SDES list (31 chunks of 31 inline items) about 31 KiB that was built, boxed and moved by value for every
/// received compound packet, and every `Rtcp` in a queue as large as its largest report list.
#[derive(Clone, PartialEq, Eq)]
pub struct ReportList<T>(Vec<T>);

/// The most items a list holds (RTCP's 5-bit count).
const MAX_ITEMS: usize = 31;

impl<T> ReportList<T> {
    pub(crate) fn new() -> Self {
        ReportList::default()
    }

    /// Number of elements in the list.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn push(&mut self, v: T) {
        assert!(
            self.0.len() < MAX_ITEMS,
            "a ReportList holds at most 31 items (callers check is_full)"
        );
        self.0.push(v);
    }

    /// Get element at position.
    pub fn get(&self, i: usize) -> Option<&T> {
        self.0.get(i)
    }

    /// Iterator over the elements in the list.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.into_iter()
    }

    /// Tells if the list contains zero elements.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn lists_from_iter(iterator: impl IntoIterator<Item = T>) -> Vec<Self> {
        let mut result = vec![];
        let mut current = Self::default();

        for (i, item) in iterator.into_iter().enumerate() {
            if i % MAX_ITEMS == 0 && i != 0 {
                result.push(current);
                current = Self::default();
            }

            current.push(item);
        }

        if !current.is_empty() {
            result.push(current);
        }

        result
    }

    pub(crate) fn is_full(&self) -> bool {
        self.0.len() == MAX_ITEMS
    }
}

impl<T: private::WordSized> ReportList<T> {
    pub(crate) fn append_all_possible(&mut self, other: &mut Self, mut words_left: usize) -> usize {
        // Max number we can move.
        let max = (MAX_ITEMS - self.len()).min(other.len());

        // Count the leading items of other that fit in the words left.
        let mut i = 0;
        while i < max {
            let item_size = other.0[i].word_size();

            // can we fit one more item?
            if words_left < item_size {
                break;
            }

            // reduce space left.
            words_left -= item_size;

            i += 1;
        }

        // move them, the remaining ones in other shift down.
        self.0.extend(other.0.drain(..i));

        // return number of appended items.
        i
    }
}

pub(crate) mod private {
    pub trait WordSized {
        fn word_size(&self) -> usize;
    }
}

impl<T> Index<usize> for ReportList<T> {
    type Output = T;

    fn index(&self, index: usize) -> &Self::Output {
        &self.0[index]
    }
}

impl<T> Default for ReportList<T> {
    fn default() -> Self {
        ReportList(Vec::new())
    }
}

impl<'a, T> IntoIterator for &'a ReportList<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T> IntoIterator for ReportList<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<T> From<T> for ReportList<T> {
    fn from(t: T) -> Self {
        let mut l = ReportList::default();
        l.push(t);
        l
    }
}

impl<T: fmt::Debug> fmt::Debug for ReportList<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[")?;
        let len = self.len();
        for (i, s) in self.0.iter().enumerate() {
            if i == len - 1 {
                write!(f, "{s:?}")?;
            } else {
                write!(f, "{s:?},")?;
            }
        }
        write!(f, "]")
    }
}

#[cfg(test)]
mod test {
    use super::ReportList;

    #[test]
    fn test_lists_from_iter() {
        let lists = ReportList::lists_from_iter(0..66);

        assert_eq!(lists.len(), 3);
        assert_eq!(lists[0].len(), 31);
        assert_eq!(lists[1].len(), 31);
        assert_eq!(lists[2].len(), 4);
    }

    #[test]
    fn test_max_length_iter() {
        let list = {
            let mut list = ReportList::new();
            for i in 1..=31 {
                list.push(i);
            }

            list
        };
        let sum: u64 = list.iter().sum();

        assert_eq!(sum, 496);
    }

    #[test]
    fn test_max_length_into_iter() {
        let list = {
            let mut list = ReportList::new();
            for i in 1..=31 {
                list.push(i);
            }

            list
        };
        let sum: u64 = list.into_iter().sum();

        assert_eq!(sum, 496);
    }

    /// A test item as many words long as its value.
    impl super::private::WordSized for u64 {
        fn word_size(&self) -> usize {
            *self as usize
        }
    }

    #[test]
    fn test_append_all_possible_moves_what_fits_and_shifts_the_rest() {
        let mut to = ReportList::new();
        to.push(1u64);
        let mut from = ReportList::new();
        for size in [2u64, 3, 4, 1] {
            from.push(size);
        }
        // 2 + 3 fit in 6 words, 4 does not.
        assert_eq!(to.append_all_possible(&mut from, 6), 2);
        assert_eq!(to.iter().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(from.iter().copied().collect::<Vec<_>>(), [4, 1]);
        assert_eq!(format!("{to:?}"), "[1,2,3]");

        // A full list takes nothing.
        let mut full = ReportList::new();
        for _ in 0..31 {
            full.push(0u64);
        }
        assert!(full.is_full());
        assert_eq!(full.append_all_possible(&mut from, 100), 0);
        assert_eq!(from.len(), 2);
    }
}
