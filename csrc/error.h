// The error slot every shim entry point reports through (read by
// radvox_last_error): records `what` for this thread and returns false.
#pragma once
bool radvox_fail(const char *what);
