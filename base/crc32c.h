/*
 * CRC-32C (Castagnoli, the iSCSI polynomial of RFC 3720), used by the WAL and
 * snapshot files.  Debian packages no C library for it, so it is here: the
 * SSE4.2 crc32 instruction when the CPU has it, slicing-by-8 tables otherwise.
 */
#ifndef CAIRN_BASE_CRC32C_H
#define CAIRN_BASE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/*
 * crc32c_extend: the CRC-32C of the bytes already summed into crc followed by
 * buf[0..len).  Start with crc = 0; crc32c_extend(crc32c_extend(0, a), b) is
 * the CRC of a followed by b, so a running CRC can be chained across records
 * and files.  Thread-safe.
 */
uint32_t crc32c_extend(uint32_t crc, const void *buf, size_t len);

/* crc32c_sw: the same, always through the tables (exposed for tests and benchmarks). */
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* crc32c_hw_available: nonzero if crc32c_extend uses the CPU instruction. */
int crc32c_hw_available(void);

#endif
