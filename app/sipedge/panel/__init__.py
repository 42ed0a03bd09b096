"""Front-panel logic in a MicroPython-compatible subset (see README.md).

`status` decides the panel state, `leds` the LED patterns, `pages` the LCD text and `hd44780`
the PCF8574/HD44780 byte protocol. Nothing here does I/O: the adapters in
`sipedge.appliance` (or a microcontroller's main loop) write the results to the hardware.
"""
