package engine

// inherit is the parallelism of an operator asked for with p and fed by
// in (nil for a source), under the package's one rule (see "Parallelism"
// in the package documentation): a positive p is the operator's own, 0
// takes its input's (1 for a source). A negative p is kept, for addNode to
// refuse naming the operator.
func inherit(p int, in *node) int {
	switch {
	case p != 0:
		return p
	case in == nil:
		return 1
	}
	return in.parallelism
}
