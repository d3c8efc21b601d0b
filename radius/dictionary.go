package radius

import _ "embed"

// Dictionary is dictionary.carrier, the FreeRADIUS dictionary that names
// the attributes we send beside the standard and Cisco ones; `carrier
// radius dictionary` prints it for installation.
//
//go:embed dictionary.carrier
var Dictionary []byte
