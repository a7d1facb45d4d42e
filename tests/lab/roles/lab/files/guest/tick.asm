; tick.asm - tiny observable guest for live-migration / evacuation tests.
;
; Real-mode boot sector (nasm -f bin). Output goes to COM1 only
; (0x3F8, 115200 8N1). Lines (CRLF terminated):
;   boot B persisted P      B = boot count (1-based), P = last tick on disk
;   boot 1 persisted none   no valid record on disk (fresh image)
;   tick N                  N = 1, 2, 3, ... about every 0.5 s (halted between)
;   error read | error write  BIOS int 13h failure (should never happen)
;
; Record in LBA 1 (CHS 0/0/2) of the boot drive, little endian:
;   offset 0  4 bytes  magic "MHVC"
;   offset 4  uint32   boots
;   offset 8  uint32   last tick
;   rest of the sector is left as read (zero in a fresh image)

        bits 16
        cpu 386
        org 0x7C00

COM1    equ 0x3F8
REC     equ 0x7E00                      ; sector buffer right after us
BDA_TICKS equ 0x046C                    ; BIOS timer tick count (0040:006C, DS = 0)
WAIT_TICKS equ 9                        ; 9 / 18.2 Hz = 0.49 s between ticks
%ifndef START
%define START 0                         ; initial tick counter (override: nasm -DSTART=n)
%endif

start:
        cli
        xor ax, ax
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov sp, 0x7C00
        sti
        cld
        mov [drive], dl

        ; --- COM1: 115200 8N1, FIFO on, DTR/RTS ---
        mov dx, COM1 + 1
        xor al, al
        out dx, al                      ; IER = 0 (no interrupts)
        mov dl, (COM1 + 3) & 0xFF
        mov al, 0x80
        out dx, al                      ; LCR: DLAB = 1
        mov dl, (COM1 + 0) & 0xFF
        mov al, 1
        out dx, al                      ; divisor low  = 1 (115200)
        inc dx
        xor al, al
        out dx, al                      ; divisor high = 0
        mov dl, (COM1 + 3) & 0xFF
        mov al, 0x03
        out dx, al                      ; LCR: 8N1, DLAB = 0
        dec dx
        mov al, 0xC7
        out dx, al                      ; FCR: enable + clear FIFOs
        mov dl, (COM1 + 4) & 0xFF
        mov al, 0x03
        out dx, al                      ; MCR: DTR | RTS

        ; --- read the record sector (retry with reset) ---
        mov bp, 3
.rd:
        mov ax, 0x0201                  ; AH=02 read, AL=1 sector
        call disk
        jnc .rdok
        xor ax, ax                      ; AH=00 reset disk system
        mov dl, [drive]
        int 0x13
        dec bp
        jnz .rd
        mov si, s_rderr
        call puts
        mov dword [REC], 0              ; treat as absent

.rdok:
        mov si, s_boot
        call puts
        cmp dword [REC], 'MHVC'
        jne .fresh
        mov eax, [REC + 4]
        inc eax
        mov [REC + 4], eax
        call putu32
        mov si, s_pers
        call puts
        mov eax, [REC + 8]
        call putu32
        jmp .hdrdone
.fresh:
        mov dword [REC], 'MHVC'
        mov dword [REC + 4], 1
        mov dword [REC + 8], 0
        mov al, '1'
        call putc
        mov si, s_pers
        call puts
        mov si, s_none
        call puts
.hdrdone:
        mov si, s_crlf
        call puts

        ; --- main loop ---
        mov dword [counter], START
.loop:
        mov eax, [counter]
        inc eax
        mov [counter], eax
        mov si, s_tick
        call puts
        mov eax, [counter]
        call putu32
        mov si, s_crlf
        call puts

        mov eax, [counter]
        mov [REC + 8], eax
        mov ax, 0x0301                  ; AH=03 write, AL=1 sector
        call disk
        jnc .wrok
        mov si, s_wrerr
        call puts
.wrok:
        ; Sleep ~0.5 s halted, not polling: int 15h AH=86h spins in SeaBIOS and cost each running
        ; guest 10-13% of a host CPU. hlt waits for the next interrupt; the BIOS's IRQ 0 handler
        ; counts 18.2 Hz timer ticks at 0040:006C, and 9 of them are 0.49 s. The difference is
        ; unsigned, so the midnight reset of the count only ends one wait early.
        mov ebx, [BDA_TICKS]
.sleep:
        sti
        hlt
        mov eax, [BDA_TICKS]
        sub eax, ebx
        cmp eax, WAIT_TICKS
        jb .sleep
        jmp .loop

; int 13h on CHS 0/0/2 of the boot drive into/from REC. AX = function.
disk:
        mov bx, REC
        mov cx, 0x0002                  ; cylinder 0, sector 2
        xor dh, dh                      ; head 0
        mov dl, [drive]
        int 0x13
        ret

; print EAX as unsigned decimal
putu32:
        mov ecx, 10
        xor bx, bx
.div:
        xor edx, edx
        div ecx
        push dx
        inc bx
        test eax, eax
        jnz .div
.out:
        pop ax
        add al, '0'
        call putc
        dec bx
        jnz .out
        ret

; print zero-terminated string at DS:SI
puts:
        lodsb
        test al, al
        jz .done
        call putc
        jmp puts
.done:
        ret

; print AL to COM1 (poll THR empty)
putc:
        push dx
        push ax
        mov dx, COM1 + 5
.wait:
        in al, dx
        test al, 0x20
        jz .wait
        pop ax
        mov dl, COM1 & 0xFF
        out dx, al
        pop dx
        ret

s_boot  db "boot ", 0
s_pers  db " persisted ", 0
s_none  db "none", 0
s_tick  db "tick ", 0
s_crlf  db 13, 10, 0
s_rderr db "error read", 13, 10, 0
s_wrerr db "error write", 13, 10, 0

drive   db 0
counter dd 0

        times 510 - ($ - $$) db 0
        dw 0xAA55
