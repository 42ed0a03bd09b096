"""HD44780 character LCD in 4-bit mode behind a PCF8574 I2C backpack: the byte protocol.

Each byte written to the PCF8574 sets its 8 output pins. The common backpack wiring is:

    P0 RS   P1 RW   P2 E   P3 backlight   P4..P7 D4..D7

A 4-bit transfer puts a nibble on D4..D7 and pulses E (high, then low); the LCD latches on the
falling edge. A command or character is two transfers, high nibble first. Functions return
"ops": a list of (bytes, delay_us) pairs — send the bytes one at a time, then wait.
"""

RS = 0x01
RW = 0x02
EN = 0x04
BACKLIGHT = 0x08

CLEAR = 0x01
HOME = 0x02
ENTRY_MODE = 0x04
ENTRY_INCREMENT = 0x02
DISPLAY_CONTROL = 0x08
DISPLAY_ON = 0x04
FUNCTION_SET = 0x20
FUNCTION_2LINE = 0x08
SET_DDRAM = 0x80

# Delays from the HD44780 data sheet (with margin)
POWER_ON_US = 50000
INIT_FIRST_US = 4500
INIT_NEXT_US = 150
COMMAND_US = 50
CLEAR_US = 2000

ROW_OFFSETS_16 = (0x00, 0x40, 0x10, 0x50)
ROW_OFFSETS_20 = (0x00, 0x40, 0x14, 0x54)


def nibble(value, rs, backlight):
    """PCF8574 bytes that clock the low 4 bits of `value` into the LCD."""
    b = ((value & 0x0F) << 4) | (RS if rs else 0) | (BACKLIGHT if backlight else 0)
    return bytes((b | EN, b))


def byte(value, rs, backlight):
    """PCF8574 bytes for one command (rs=False) or character (rs=True)."""
    return nibble(value >> 4, rs, backlight) + nibble(value, rs, backlight)


def command(value, backlight=True):
    delay = CLEAR_US if value in (CLEAR, HOME) else COMMAND_US
    return (byte(value, False, backlight), delay)


def init_ops(rows, backlight=True):
    """Power-on sequence: force 8-bit mode three times, switch to 4-bit, configure."""
    ops = [(bytes(((BACKLIGHT if backlight else 0),)), POWER_ON_US),
           (nibble(0x3, False, backlight), INIT_FIRST_US),
           (nibble(0x3, False, backlight), INIT_NEXT_US),
           (nibble(0x3, False, backlight), INIT_NEXT_US),
           (nibble(0x2, False, backlight), INIT_NEXT_US)]
    ops.append(command(FUNCTION_SET | (FUNCTION_2LINE if rows > 1 else 0), backlight))
    ops.append(command(DISPLAY_CONTROL, backlight))
    ops.append(command(CLEAR, backlight))
    ops.append(command(ENTRY_MODE | ENTRY_INCREMENT, backlight))
    ops.append(command(DISPLAY_CONTROL | DISPLAY_ON, backlight))
    return ops


def row_address(row, cols):
    offsets = ROW_OFFSETS_20 if cols == 20 else ROW_OFFSETS_16
    return offsets[row]


def char_code(ch):
    """ROM A00 code of a character. Printable ASCII maps to itself except backslash and tilde
    (yen and arrow in the ROM); everything else becomes '?'."""
    c = ord(ch)
    if 0x20 <= c <= 0x7D and c != 0x5C:
        return c
    return 0x3F


def text_ops(row, text, cols, backlight=True):
    """Ops that write `text` (cut/padded to `cols`) at the start of `row`."""
    data = bytes()
    data += byte(SET_DDRAM | row_address(row, cols), False, backlight)
    ops = [(data, COMMAND_US)]
    chars = bytes()
    text = text[:cols]
    for ch in text:
        chars += byte(char_code(ch), True, backlight)
    for _ in range(cols - len(text)):
        chars += byte(0x20, True, backlight)
    ops.append((chars, COMMAND_US))
    return ops


def screen_ops(lines, cols, previous=None, backlight=True):
    """Ops that show `lines`; rows equal to `previous` (the last screen) are skipped."""
    ops = []
    for row in range(len(lines)):
        if previous is not None and row < len(previous) and previous[row] == lines[row]:
            continue
        ops.extend(text_ops(row, lines[row], cols, backlight))
    return ops


def flatten(ops):
    """All bytes of `ops` in order (what a recording bus should have seen)."""
    out = bytes()
    for data, _delay in ops:
        out += data
    return out
