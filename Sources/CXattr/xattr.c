// The module is the header; SwiftPM needs one source file for a C target.
#include "CXattr.h"
