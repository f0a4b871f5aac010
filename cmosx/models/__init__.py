"""Network architectures (GIA, HRNet backbone, CMOS, RRDB-SFT), size specs, weights I/O and Hub loading."""
