/* CRC-32 (IEEE 802.3, bitwise and table-driven) over a pseudo-random buffer. */
#include "runtime.h"

#define SIZE (256 * 1024)
#define ROUNDS 12
static uint8_t data[SIZE];
static uint32_t table[256];

static uint32_t crc_bitwise(const uint8_t *p, size_t n)
{
    uint32_t crc = 0xFFFFFFFF;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320 & -(crc & 1));
    }
    return ~crc;
}

static uint32_t crc_table(const uint8_t *p, size_t n)
{
    uint32_t crc = 0xFFFFFFFF;
    while (n--)
        crc = table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

int main(void)
{
    uint32_t x = 12345;
    for (int i = 0; i < SIZE; i++) {
        x = x * 1103515245 + 12345;
        data[i] = x >> 16;
    }
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320 & -(c & 1));
        table[i] = c;
    }
    uint32_t slow = crc_bitwise(data, SIZE), fast = 0;
    for (int round = 0; round < ROUNDS; round++)
        fast = crc_table(data, SIZE) ^ round;
    fast ^= ROUNDS - 1;
    printf("crc32 %08x %08x\n", slow, fast);
    return slow == fast ? 0 : 1;
}
