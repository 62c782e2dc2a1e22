package storage

// Classify is the classification of the store's errors on dialect d, for
// tests of the mapping from driver errors to sentinels.
func Classify(d Dialect, err error) error {
	for _, f := range flavors {
		if f.dialect == d {
			return f.classify(err)
		}
	}
	panic("storage: no flavor " + string(d))
}

// SQLiteCodeKind is the sentinel of a SQLite result code (the driver's
// error type has no constructor to build one in a test).
var SQLiteCodeKind = sqliteCodeKind
